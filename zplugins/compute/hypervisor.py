"""The hypervisor driver family: ``zcore.hypervisors``.

A cluster's ``hypervisorType`` (``KVM``, ``Simulator``) names a driver in the stevedore
namespace ``zcore.hypervisors``; every host of the cluster is driven by it. A distribution adds
a hypervisor by registering a subclass of :class:`HypervisorDriver` there::

    # pyproject.toml of a third-party distribution
    [project.entry-points."zcore.plugins"]
    xen = "acme_xen"

    [project.entry-points."zcore.hypervisors"]
    Xen = "acme_xen.hypervisor:XenHypervisor"

The driver's module must belong to an enabled plugin (here ``acme_xen``): disabling the plugin
removes the hypervisor, and ``CreateCluster`` then refuses that ``hypervisorType``. The API
that adds hosts of the new type subclasses :class:`zplugins.compute.public.AddHostMessage`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from zcore.node import Node
    from zplugins.compute.public import HostInfo
    from zplugins.compute.vm_contract import NicTO, VmTO, VolumeTO

__all__ = ["HOST_INVENTORY", "HYPERVISORS", "HostFacts", "HypervisorDriver"]

#: The driver namespace of hypervisors.
HYPERVISORS = "zcore.hypervisors"

#: The server class of a host's inventory when its driver names no class of its own.
HOST_INVENTORY = "org.zstack.header.host.HostInventory"


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What a host reports about itself when it connects.

    ``cpuNum`` is the number of logical CPUs (threads), ``cpuSockets`` of physical ones,
    ``cpuSpeed`` their speed in MHz (0 when unknown), ``totalMemory`` the host's memory in
    bytes and ``architecture`` its CPU architecture (``x86_64``, ``aarch64``, ...; ``None``
    when unknown). The node computes the host's capacity from them (see
    :mod:`zplugins.compute.hosts`).
    """

    cpuNum: int
    cpuSockets: int
    totalMemory: int
    cpuSpeed: int = 0
    architecture: str | None = None


class HypervisorDriver(ABC):
    """The base of every hypervisor driver; one instance per management node.

    ``hypervisor_type`` is the name clusters store in ``hypervisorType`` and must equal the
    driver's entry-point name in ``zcore.hypervisors`` (the node checks it at start-up).
    ``host_inventory_class`` is the server class of its hosts' inventories (ZStack's
    ``org.zstack.kvm.KVMHostInventory``); :meth:`host_inventory_fields` adds that class's
    fields.

    The node creates the driver (without arguments) the first time one of its hosts needs
    it and calls :meth:`close` when the node stops. Every method may be called concurrently
    for different hosts; keep per-host state keyed by host uuid. A method that fails raises
    (any exception; a :class:`~zcore.errors.ZError` keeps its code) with a message that
    names the host and what failed.

    Hosts reach the driver through three operations: :meth:`connect` (when a host is added,
    reconnected, or answers again after it was disconnected), :meth:`ping` (periodically,
    from every node's ping task) and :meth:`call` (an agent command from any plugin, through
    :func:`zplugins.compute.public.host_call`). VM operations arrive with VMs.
    """

    hypervisor_type: ClassVar[str]
    host_inventory_class: ClassVar[str] = HOST_INVENTORY

    @abstractmethod
    async def connect(self, node: Node, host: HostInfo, known: HostFacts | None) -> HostFacts:
        """Connect to ``host`` and return what it reports about itself.

        Called with the host in status ``Connecting``, inside the workflow chain
        ``host-connect``; raising fails the connection (a new host is then not added, an
        existing one becomes ``Disconnected``). ``known`` is what the host reported when it
        last connected, ``None`` for a host being added: a driver whose hosts keep no state
        of their own may rebuild it from that.
        """

    @abstractmethod
    async def ping(self, node: Node, host: HostInfo, timeout: float) -> None:
        """Check within ``timeout`` seconds that ``host`` is reachable; raise if it is not.

        A host that fails ``host.ping.maxFailure`` pings in a row becomes ``Disconnected``;
        a disconnected host that answers is connected again (:meth:`connect`).
        """

    @abstractmethod
    async def call(self, node: Node, host: HostInfo, path: str, body: Mapping[str, Any],
                   timeout: float | None) -> dict[str, Any]:
        """Send the agent command ``path`` with ``body`` to ``host``; the host's reply.

        ``path`` follows ZStack's KVM agent protocol (``/network/l2vlan/createbridge``); the
        reply is the agent's JSON object. A reply ``{"success": false, "error": "..."}`` is
        returned as it is: :func:`zplugins.compute.public.host_call` turns it into an
        error. Raise when the command could not be delivered or timed out (``timeout``
        seconds; ``None`` for the driver's default).
        """

    async def disconnect(self, node: Node, host: HostInfo) -> None:
        """``host`` is being deleted: forget what the driver keeps about it. Default: nothing.

        Failures are logged and do not stop the deletion.
        """

    async def host_inventory_fields(self, node: Node, hosts: Sequence[Mapping[str, Any]]
                                    ) -> dict[str, dict[str, Any]]:
        """The fields this hypervisor adds to its hosts' inventories, by host uuid.

        ``hosts`` are HostInventory dicts of hosts of this type. Never return secrets
        (a password). Default: none.
        """
        return {}

    async def close(self) -> None:
        """The node stops: release connections and tasks. Default: nothing."""

    # ----------------------------------------------------------------- VMs
    #
    # The VM lifecycle calls these, each inside the VM's own sync queue and at most
    # ``kvm.host.syncLevel`` at a time per host. Raise (a ZError keeps its code) with a
    # message naming the host and the VM when the hypervisor refuses or cannot be reached;
    # the caller's chain then rolls back. ``vm`` describes the whole VM; operations that
    # need only its identity get ``vm_uuid``. A VM may live only as a domain definition on the
    # host (libvirt), so reboot, attach and detach never need the full description.

    def _unsupported(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"hypervisor {self.hypervisor_type} cannot {what}")

    async def start_vm(self, node: Node, host: HostInfo, vm: VmTO) -> None:
        """Define ``vm`` on ``host`` (if it is not) and start it."""
        raise self._unsupported("start VMs")

    async def stop_vm(self, node: Node, host: HostInfo, vm_uuid: str, *, type: str = "grace",
                      timeout: float = 60) -> None:
        """Stop the VM: ``grace`` asks the guest to shut down and destroys it after
        ``timeout`` seconds; ``cold`` destroys it at once. A VM already stopped is fine."""
        raise self._unsupported("stop VMs")

    async def reboot_vm(self, node: Node, host: HostInfo, vm_uuid: str) -> None:
        """Reboot the running VM."""
        raise self._unsupported("reboot VMs")

    async def pause_vm(self, node: Node, host: HostInfo, vm_uuid: str) -> None:
        """Suspend the running VM in memory."""
        raise self._unsupported("pause VMs")

    async def resume_vm(self, node: Node, host: HostInfo, vm_uuid: str) -> None:
        """Resume the paused VM."""
        raise self._unsupported("resume VMs")

    async def destroy_vm(self, node: Node, host: HostInfo, vm_uuid: str) -> None:
        """Power the VM off and forget its definition; a VM the host does not know is fine."""
        raise self._unsupported("destroy VMs")

    async def migrate_vm(self, node: Node, host: HostInfo, vm_uuid: str,
                         destination: HostInfo) -> None:
        """Move the running VM live from ``host`` to ``destination``."""
        raise self._unsupported("migrate VMs")

    async def attach_volume(self, node: Node, host: HostInfo, vm_uuid: str,
                            volume: VolumeTO) -> None:
        """Plug ``volume`` into the VM (running or defined on ``host``)."""
        raise self._unsupported("attach volumes")

    async def detach_volume(self, node: Node, host: HostInfo, vm_uuid: str,
                            volume: VolumeTO) -> None:
        """Unplug ``volume`` from the VM; a volume not plugged in is fine."""
        raise self._unsupported("detach volumes")

    async def attach_nic(self, node: Node, host: HostInfo, vm_uuid: str, nic: NicTO) -> None:
        """Plug ``nic`` into the VM (running or defined on ``host``)."""
        raise self._unsupported("attach NICs")

    async def detach_nic(self, node: Node, host: HostInfo, vm_uuid: str, nic: NicTO) -> None:
        """Unplug ``nic`` from the VM; a NIC not plugged in is fine."""
        raise self._unsupported("detach NICs")

    async def vm_states(self, node: Node, host: HostInfo) -> dict[str, str]:
        """The VMs ``host`` runs, by uuid: ``Running``, ``Paused`` or ``Stopped``.

        Called when the host (re)connects: the node then trusts these states over its own.
        """
        raise self._unsupported("report VM states")

    async def console_address(self, node: Node, host: HostInfo, vm_uuid: str
                              ) -> dict[str, Any]:
        """Where the VM's console listens: ``{"hostIp": ..., "port": ..., "protocol": "vnc"}``."""
        raise self._unsupported("give console addresses")
