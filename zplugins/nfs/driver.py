"""The ``NFS`` primary storage driver."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from zcore.errors import ZError
from zplugins.compute.public import HOST_OPERATION_FAILED, HostInfo, host_call
from zplugins.storage.public import Capacity, PrimaryStorageDriver, PrimaryStorageInfo

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = ["MOUNT_PATH", "PING_PATH", "UNMOUNT_PATH", "NfsDriver"]

#: The agent commands of ZStack's NFS primary storage backend.
MOUNT_PATH = "/nfsprimarystorage/mount"
UNMOUNT_PATH = "/nfsprimarystorage/unmount"
PING_PATH = "/nfsprimarystorage/ping"


def _capacity(host: HostInfo, reply: dict[str, Any]) -> Capacity:
    try:
        return Capacity(int(reply["totalCapacity"]), int(reply["availableCapacity"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ZError(HOST_OPERATION_FAILED, "bad agent reply",
                     f"{host}: the reply to {MOUNT_PATH} holds no valid totalCapacity and "
                     f"availableCapacity (bytes): {reply!r}") from exc


class NfsDriver(PrimaryStorageDriver):
    """An NFS export mounted on every host of the storage's clusters."""

    type = "NFS"
    agent_path = "/nfsprimarystorage"

    def mount_path(self, uuid: str, url: str) -> str:
        return f"/opt/zstack/nfsprimarystorage/prim-{uuid}"

    def _command(self, ps: PrimaryStorageInfo) -> dict[str, Any]:
        return {"uuid": ps.uuid, "url": ps.url, "mountPath": ps.mountPath, "options": None}

    async def prepare_host(self, node: Node, ps: PrimaryStorageInfo,
                           host: HostInfo) -> Capacity:
        return _capacity(host, await host_call(node, host, MOUNT_PATH, self._command(ps)))

    async def release_host(self, node: Node, ps: PrimaryStorageInfo, host: HostInfo) -> None:
        await host_call(node, host, UNMOUNT_PATH, self._command(ps))

    async def ping(self, node: Node, ps: PrimaryStorageInfo,
                   hosts: Sequence[HostInfo]) -> None:
        # The export answers if any host that mounts it can reach it.
        error: ZError | None = None
        for host in hosts:
            try:
                await host_call(node, host, PING_PATH, self._command(ps))
                return
            except ZError as exc:
                error = exc
        if error is not None:
            raise error

    def combine(self, ps: PrimaryStorageInfo, reports: Sequence[Capacity]) -> Capacity | None:
        # Every host sees the same export; the largest view is the least stale one.
        if not reports:
            return None
        return max(reports, key=lambda r: (r.total_physical, r.available_physical))
