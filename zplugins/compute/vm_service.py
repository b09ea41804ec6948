"""Reading VMs and running work on them: per-VM and per-host serialization.

Every operation on a VM runs in the sync queue ``vm-<uuid>`` (one at a time, FIFO), so no
lock is needed. Every call to a hypervisor about a host runs in the queue ``host-<uuid>``
with the level ``kvm.host.syncLevel``: that many at once per host, while different hosts
proceed in parallel.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.orm import Session

from zcore import GlobalConfigOption
from zplugins.compute.models import VmInstanceVO

if TYPE_CHECKING:
    from zcore.flow import FlowContext
    from zcore.node import Node
    from zplugins.compute.hypervisor import HypervisorDriver

__all__ = ["SYNC_LEVEL", "VM_PLUGINS", "PersistedVm", "VmInfo", "get_vm", "global_configs",
           "hypervisor_of", "on_host", "persisted_vm", "remember_persisted_vm", "vm_queue"]

T = TypeVar("T")

#: The plugins a VM is made of: its APIs and chains exist only where all are enabled.
VM_PLUGINS = ("storage", "network")

#: Global configuration: how many hypervisor calls run at once per host.
SYNC_CATEGORY, SYNC_NAME = "kvm", "host.syncLevel"
SYNC_LEVEL = f"{SYNC_CATEGORY}.{SYNC_NAME}"


@dataclass(frozen=True, slots=True)
class PersistedVm:
    """The columns of a VM row as vm-create's ``persist-vm`` wrote them, and its hostname
    tag, kept in the chain's context (:func:`persisted_vm`): the VM is in its queue, so
    nothing else changes them before the chain's next compute steps, which then read
    nothing back. What later compute steps write is not in it."""

    uuid: str
    name: str
    cpuNum: int
    memorySize: int
    cpuSpeed: int
    allocatorStrategy: str | None
    instanceOfferingUuid: str | None
    hostname: str | None
    # Still empty in a new row: allocate-host and post-instantiate set them.
    hostUuid: str | None = None
    lastHostUuid: str | None = None
    clusterUuid: str | None = None
    zoneUuid: str | None = None
    hypervisorType: str | None = None
    platform: str | None = None
    architecture: str | None = None


#: The context key of the :class:`PersistedVm` of vm-create.
_PERSISTED_VM = "_compute_persisted_vm"


def remember_persisted_vm(ctx: FlowContext, vm: PersistedVm) -> None:
    """Keep what persist-vm wrote in the chain's context, for :func:`persisted_vm`."""
    ctx[_PERSISTED_VM] = vm


def persisted_vm(ctx: FlowContext) -> PersistedVm | None:
    """The chain's VM as persist-vm wrote it, if this chain wrote it (vm-create)."""
    vm: PersistedVm | None = ctx.get(_PERSISTED_VM)
    return vm if vm is not None and vm.uuid == ctx.get("vm_uuid") else None


@dataclass(frozen=True, slots=True)
class VmInfo:
    """A VM, read-only: a snapshot of its row."""

    uuid: str
    name: str
    state: str
    zoneUuid: str | None
    clusterUuid: str | None
    hostUuid: str | None
    lastHostUuid: str | None
    hypervisorType: str | None
    cpuNum: int
    memorySize: int
    imageUuid: str | None
    rootVolumeUuid: str | None
    defaultL3NetworkUuid: str | None
    platform: str | None
    architecture: str | None

    @classmethod
    def of(cls, row: Any) -> VmInfo:
        return cls(row.uuid, row.name, row.state, row.zoneUuid, row.clusterUuid, row.hostUuid,
                   row.lastHostUuid, row.hypervisorType, row.cpuNum, row.memorySize,
                   row.imageUuid, row.rootVolumeUuid, row.defaultL3NetworkUuid, row.platform,
                   row.architecture)


def global_configs() -> list[GlobalConfigOption]:
    return [GlobalConfigOption(SYNC_CATEGORY, SYNC_NAME, int, 10, min=1, max=1000,
                               description="How many hypervisor operations (VM creations, "
                                           "starts, stops, ...) run at once on one host")]


async def get_vm(node: Node, uuid: str) -> VmInfo | None:
    """The VM ``uuid`` as it is now, or ``None``."""
    def read(session: Session) -> VmInfo | None:
        row = session.get(VmInstanceVO, uuid)
        return VmInfo.of(row) if row is not None else None

    return await node.db.run(read)


async def vm_queue(node: Node, vm_uuid: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work()`` after every earlier operation on the VM, alone."""
    return await node.queues.run(f"vm-{vm_uuid}", 1, work)


async def on_host(node: Node, host_uuid: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work()`` among at most ``kvm.host.syncLevel`` hypervisor calls on the host."""
    level = int(node.global_config.get(SYNC_CATEGORY, SYNC_NAME))
    return await node.queues.run(f"host-{host_uuid}", level, work)


def hypervisor_of(node: Node, hypervisor_type: str) -> HypervisorDriver:
    """The node's driver for ``hypervisor_type`` (``ZError`` if it is not available)."""
    from zplugins.compute.host_service import service

    return service(node).driver(hypervisor_type)
