"""The KVM hypervisor driver."""

from __future__ import annotations

from zplugins.compute.hypervisor import HypervisorDriver

__all__ = ["KvmHypervisor"]


class KvmHypervisor(HypervisorDriver):
    """KVM hosts, managed through the KVM agent (which arrives with the datacenter issue)."""

    hypervisor_type = "KVM"
