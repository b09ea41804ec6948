"""KVM: the ``KVM`` hypervisor, driven through an agent on each host that talks to libvirt.

For now the plugin provides only its driver (``zplugins.kvm.hypervisor.KvmHypervisor`` in the
``zcore.hypervisors`` namespace), so clusters of hypervisor type ``KVM`` can be created. KVM
hosts, their agent and its deployment arrive with the datacenter issue.
"""

from __future__ import annotations

ZCORE_REQUIRES = ("compute",)
