"""The hypervisor driver family: ``zcore.hypervisors``.

A cluster's ``hypervisorType`` (``KVM``, ``Simulator``) names a driver in the stevedore
namespace ``zcore.hypervisors``; the node fetches it with
``node.drivers.get("zcore.hypervisors", cluster.hypervisorType)``. A distribution adds a
hypervisor by registering a subclass of :class:`HypervisorDriver` there::

    # pyproject.toml of a third-party distribution
    [project.entry-points."zcore.plugins"]
    xen = "acme_xen"

    [project.entry-points."zcore.hypervisors"]
    Xen = "acme_xen.hypervisor:XenHypervisor"

The driver's module must belong to an enabled plugin (here ``acme_xen``): disabling the plugin
removes the hypervisor, and ``CreateCluster`` then refuses that ``hypervisorType``.
"""

from __future__ import annotations

from abc import ABC
from typing import ClassVar

__all__ = ["HYPERVISORS", "HypervisorDriver"]

#: The driver namespace of hypervisors.
HYPERVISORS = "zcore.hypervisors"


class HypervisorDriver(ABC):
    """The base of every hypervisor driver.

    ``hypervisor_type`` is the name clusters store in ``hypervisorType`` and must equal the
    driver's entry-point name in ``zcore.hypervisors`` (the node checks it at start-up).

    For now a driver only names its hypervisor. The operations arrive with the issues that
    need them, as methods every driver implements: connecting, reconnecting and pinging a host
    and reporting its capacity (with hosts), then creating, starting, stopping, rebooting,
    migrating and destroying VMs, attaching volumes and NICs, and reporting VM states (with
    VMs). ``KVM`` will do this through the KVM agent on each host; ``Simulator`` in process,
    for tests and benchmarks.
    """

    hypervisor_type: ClassVar[str]
