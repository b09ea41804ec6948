"""Simulated primary storage, and the primary storage commands of simulated hosts.

``AddSimulatorPrimaryStorage`` adds a primary storage of type ``Simulator`` (driver
:class:`SimulatorPrimaryStorageDriver` in ``zcore.primary_storage``) with the capacity it is
given: ``totalCapacity``/``availableCapacity`` are the size and free space of the simulated
storage (``totalPhysicalCapacity``/``availablePhysicalCapacity``, when given, take
precedence), and its ``totalCapacity``/``availableCapacity`` follow from them as for any
primary storage (over-provisioning ratio, reserved capacity). It needs nothing on the hosts.

Simulated hosts answer the agent commands of local and NFS primary storage, so those drivers
run unchanged against them:

* ``/localstorage/init`` reports the host's local disk: ``host.state["localStorage"]``, a
  :class:`~zplugins.storage.public.Capacity` (default :data:`LOCAL_DISK`: 1 TiB, all free);
* ``/nfsprimarystorage/mount`` reports the export's capacity:
  ``host.state["nfs"][url]`` (default :data:`NFS_EXPORT`: 10 TiB, all free), and records the
  mount in ``host.state["nfsMounts"]`` (a set of mount paths), which ``unmount`` removes;
* ``/nfsprimarystorage/ping`` answers when the export is mounted there.

Tests set those states on a simulated host, make it fail a command or become unreachable
with the host simulator's own controls, and read ``host.calls`` to see what it received.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from zcore import ApiMessage
from zcore.api import Param
from zcore.errors import INVALID_ARGUMENT, ZError
from zplugins.storage.public import (
    AddPrimaryStorageMessage,
    Capacity,
    PrimaryStorageDriver,
    PrimaryStorageInfo,
    PrimaryStorageSpec,
)

if TYPE_CHECKING:
    from zcore.api import ApiContext
    from zcore.node import Node
    from zplugins.compute.public import HostInfo

__all__ = [
    "LOCAL_DISK",
    "NFS_EXPORT",
    "AddSimulatorPrimaryStorage",
    "SimulatorPrimaryStorageDriver",
]

TiB = 1024 ** 4
#: The local disk of a simulated host, unless its state says otherwise.
LOCAL_DISK = Capacity(TiB, TiB)
#: An NFS export seen from a simulated host, unless its state says otherwise.
NFS_EXPORT = Capacity(10 * TiB, 10 * TiB)

#: Up to 1 EiB each, so that sums over many simulated storages fit in 64 bits.
_BYTES = (0, 2 ** 60)


class SimulatorPrimaryStorageDriver(PrimaryStorageDriver):
    """A primary storage that exists only in the database, with the capacity it was given."""

    type = "Simulator"
    agent_path = "/simulator/primarystorage"

    async def connect(self, node: Node, ps: PrimaryStorageInfo) -> Capacity:
        return Capacity(ps.totalPhysicalCapacity, ps.availablePhysicalCapacity)

    async def prepare_host(self, node: Node, ps: PrimaryStorageInfo,
                           host: HostInfo) -> Capacity | None:
        return None

    async def ping(self, node: Node, ps: PrimaryStorageInfo,
                   hosts: Sequence[HostInfo]) -> None:
        return None


class AddSimulatorPrimaryStorage(AddPrimaryStorageMessage, method="POST",
                                 path="/primary-storage/simulators"):
    """Add a simulated primary storage with the capacity given (bytes; default 1 TiB, free)."""

    storage_type = SimulatorPrimaryStorageDriver.type

    totalCapacity = Param(int, api_type="Long", number_range=_BYTES,
                          description="Size of the simulated storage (default 1 TiB)")
    availableCapacity = Param(int, api_type="Long", number_range=_BYTES,
                              description="Its free space (default: all of it)")
    availablePhysicalCapacity = Param(int, api_type="Long", number_range=_BYTES,
                                      description="Free space; wins over availableCapacity")
    totalPhysicalCapacity = Param(int, api_type="Long", number_range=_BYTES,
                                  description="Size; wins over totalCapacity")

    def _physical(self) -> Capacity:
        total = self.totalPhysicalCapacity
        if total is None:
            total = self.totalCapacity if self.totalCapacity is not None else TiB
        available = self.availablePhysicalCapacity
        if available is None:
            available = self.availableCapacity if self.availableCapacity is not None else total
        return Capacity(total, available)

    async def validate(self, ctx: ApiContext) -> None:
        await super().validate(ctx)
        physical = self._physical()
        if physical.available_physical > physical.total_physical:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"{self.api_name}: the available capacity "
                         f"({physical.available_physical} bytes) exceeds the total "
                         f"({physical.total_physical} bytes)")

    def spec(self) -> PrimaryStorageSpec:
        return PrimaryStorageSpec(self.zoneUuid, self.name, self.url.strip(), self.storage_type,
                                  self.description, self.resourceUuid, self._physical())


# --------------------------------------------------------------------------- simulated hosts


def _local_init(host: Any, body: dict[str, Any]) -> dict[str, Any]:
    disk = host.state.get("localStorage", LOCAL_DISK)
    return {"success": True, "totalCapacity": disk.total_physical,
            "availableCapacity": disk.available_physical, "localStorageUsedCapacity": 0}


def _nfs_mount(host: Any, body: dict[str, Any]) -> dict[str, Any]:
    export = host.state.get("nfs", {}).get(body.get("url"), NFS_EXPORT)
    host.state.setdefault("nfsMounts", set()).add(body.get("mountPath"))
    return {"success": True, "totalCapacity": export.total_physical,
            "availableCapacity": export.available_physical}


def _nfs_unmount(host: Any, body: dict[str, Any]) -> dict[str, Any]:
    host.state.setdefault("nfsMounts", set()).discard(body.get("mountPath"))
    return {"success": True}


def _nfs_ping(host: Any, body: dict[str, Any]) -> dict[str, Any]:
    if body.get("mountPath") not in host.state.get("nfsMounts", set()):
        return {"success": False,
                "error": f"{body.get('url')} is not mounted at {body.get('mountPath')}"}
    return {"success": True}


HANDLERS = {
    "/localstorage/init": _local_init,
    "/nfsprimarystorage/mount": _nfs_mount,
    "/nfsprimarystorage/unmount": _nfs_unmount,
    "/nfsprimarystorage/ping": _nfs_ping,
}


def api_messages() -> Iterator[ApiMessage]:
    yield ApiMessage(AddSimulatorPrimaryStorage)


def node_starting(node: Node) -> None:
    from zplugins.simulator.hosts import SIMULATOR

    for path, handler in HANDLERS.items():
        SIMULATOR.register_handler(path, handler)
