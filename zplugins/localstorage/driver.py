"""The ``LocalStorage`` primary storage driver."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from zcore.errors import ZError
from zplugins.compute.public import HOST_OPERATION_FAILED, HostInfo, host_call
from zplugins.storage.public import Capacity, PrimaryStorageDriver, PrimaryStorageInfo

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = ["INIT_PATH", "LocalStorageDriver", "reported_capacity"]

#: The agent command that creates the directory on a host and reports its disk's capacity.
INIT_PATH = "/localstorage/init"


def reported_capacity(host: HostInfo, path: str, reply: dict[str, Any]) -> Capacity:
    """The ``totalCapacity``/``availableCapacity`` of an agent reply; ``HOST.1001`` if absent."""
    try:
        total, available = int(reply["totalCapacity"]), int(reply["availableCapacity"])
        return Capacity(total, available)
    except (KeyError, TypeError, ValueError) as exc:
        raise ZError(HOST_OPERATION_FAILED, "bad agent reply",
                     f"{host}: the reply to {path} holds no valid totalCapacity and "
                     f"availableCapacity (bytes): {reply!r}") from exc


class LocalStorageDriver(PrimaryStorageDriver):
    """A directory on each host's own disk; the capacity is the sum of the hosts' disks."""

    type = "LocalStorage"
    agent_path = "/localstorage"
    host_local = True

    async def prepare_host(self, node: Node, ps: PrimaryStorageInfo,
                           host: HostInfo) -> Capacity:
        reply = await host_call(node, host, INIT_PATH, {
            "path": ps.url, "hostUuid": host.uuid, "uuid": ps.uuid,
            "initFilePath": f"{ps.url.rstrip('/')}/zstack_smp_init_file"})
        return reported_capacity(host, INIT_PATH, reply)

    async def ping(self, node: Node, ps: PrimaryStorageInfo,
                   hosts: Sequence[HostInfo]) -> None:
        # It lives on the hosts, which the compute plugin pings.
        return None

    def combine(self, ps: PrimaryStorageInfo, reports: Sequence[Capacity]) -> Capacity:
        return Capacity(sum(r.total_physical for r in reports),
                        sum(r.available_physical for r in reports))
