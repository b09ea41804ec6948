"""The primary storage driver family: ``zcore.primary_storage``.

A primary storage's ``type`` (``LocalStorage``, ``NFS``, ``Simulator``) names a driver in the
stevedore namespace ``zcore.primary_storage``; the storage plugin fetches it with
``node.drivers.get("zcore.primary_storage", ps.type)``. A distribution adds a kind of primary
storage by registering a subclass of :class:`PrimaryStorageDriver` there, from its own plugin
(which also provides the ``Add...PrimaryStorage`` API that creates one, a subclass of
:class:`zplugins.storage.public.AddPrimaryStorageMessage`)::

    # pyproject.toml of a third-party distribution
    [project.entry-points."zcore.plugins"]
    acmefs = "acme_fs"

    [project.entry-points."zcore.primary_storage"]
    AcmeFS = "acme_fs.driver:AcmeFsDriver"

What the storage plugin does with a driver, and when:

* ``connect`` when the storage is added and on ``ReconnectPrimaryStorage``;
* ``attach`` (by default ``prepare_host`` on each host) for every connected host of a cluster
  when the storage is attached to it, again on reconnect, and for one host each time a host
  of an attached cluster connects (the host-connect chain): a failure fails the attachment
  (rolled back), the reconnection, or the host's connection;
* ``combine`` to turn what the hosts reported into the storage's physical capacity;
* ``detach`` (by default ``release_host`` on each host) when the storage leaves a cluster;
* ``ping`` periodically (global configuration ``primaryStorage.ping.interval``).

Drivers talk to hosts through :func:`zplugins.compute.public.host_call`, which speaks ZStack's
agent protocol to the host's hypervisor driver (the simulator answers in process).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from zcore.errors import ZError

if TYPE_CHECKING:
    from zcore.node import Node
    from zplugins.compute.public import HostInfo

__all__ = [
    "PRIMARY_STORAGE",
    "PS_ATTACH_FAILED",
    "PS_CONNECT_FAILED",
    "PS_NO_HOST",
    "Capacity",
    "PrimaryStorageDriver",
    "PrimaryStorageInfo",
]

log = logging.getLogger("zplugins.storage.primary")

#: The driver namespace of primary storage.
PRIMARY_STORAGE = "zcore.primary_storage"

#: Preparing the storage on a host failed, so it was not attached (or the host not connected).
PS_ATTACH_FAILED = "PS.1001"
#: Connecting to the storage failed (``ReconnectPrimaryStorage``, the periodic ping).
PS_CONNECT_FAILED = "PS.1003"
#: No connected host reaches the storage, so nothing can be done on it now.
PS_NO_HOST = "PS.1004"

#: How many hosts a driver prepares at once by default.
HOST_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class Capacity:
    """Physical capacity in bytes, as a storage (or one host's view of it) reports it."""

    total_physical: int
    available_physical: int

    def __post_init__(self) -> None:
        if self.total_physical < 0 or self.available_physical < 0:
            raise ValueError(f"capacity must not be negative: {self}")


@dataclass(frozen=True, slots=True)
class PrimaryStorageInfo:
    """What a driver knows of a primary storage: a snapshot of its row."""

    uuid: str
    name: str
    type: str
    url: str
    zoneUuid: str
    mountPath: str | None
    state: str
    status: str
    totalPhysicalCapacity: int
    availablePhysicalCapacity: int

    @classmethod
    def of(cls, row: Any) -> PrimaryStorageInfo:
        return cls(row.uuid, row.name, row.type, row.url, row.zoneUuid, row.mountPath,
                   row.state, row.status, row.totalPhysicalCapacity,
                   row.availablePhysicalCapacity)


class PrimaryStorageDriver(ABC):
    """The base of every primary storage driver.

    ``type`` is the name primary storage rows store in ``type`` and must equal the driver's
    entry-point name in ``zcore.primary_storage`` (the node checks it at start-up). Drivers
    are instantiated without arguments, once per use: keep no state on ``self``.
    """

    type: ClassVar[str]
    #: True when each host keeps volumes on its own disk (local storage): a volume's bits are
    #: on one host, its VM runs there and its files are deleted through it.
    host_local: ClassVar[bool] = False

    def mount_path(self, uuid: str, url: str) -> str | None:
        """Where hosts find the storage (the inventory's ``mountPath``); by default the url."""
        return url

    async def connect(self, node: Node, ps: PrimaryStorageInfo) -> Capacity | None:
        """Reach the storage itself, when it is added and reconnected.

        Return its capacity if the storage knows it without a host, else ``None`` (the hosts
        report it when the storage is prepared on them). Raise a ``ZError`` when it cannot
        be reached. By default: ``None``.
        """
        return None

    @abstractmethod
    async def prepare_host(self, node: Node, ps: PrimaryStorageInfo,
                           host: HostInfo) -> Capacity | None:
        """Make the storage usable on ``host`` (mount it, create its directory).

        Return the capacity the host sees, or ``None`` if the host does not report one.
        Raise a ``ZError`` naming the host on failure.
        """

    async def release_host(self, node: Node, ps: PrimaryStorageInfo, host: HostInfo) -> None:
        """Undo :meth:`prepare_host` when the storage leaves the host's cluster (unmount).

        By default nothing. A failure is logged and does not stop the detachment.
        """

    @abstractmethod
    async def ping(self, node: Node, ps: PrimaryStorageInfo, hosts: Sequence[HostInfo]) -> None:
        """Check that the storage still answers; raise a ``ZError`` if it does not.

        ``hosts`` are the connected hosts of the clusters it is attached to, for a storage
        that is reached through them.
        """

    def combine(self, ps: PrimaryStorageInfo, reports: Sequence[Capacity]) -> Capacity | None:
        """The storage's physical capacity from what its hosts reported, or ``None`` to keep
        the capacity it has (from :meth:`connect`).

        By default ``None``. A storage that lives on each host (local storage) sums the
        reports; a shared one (NFS) takes the view of any host.
        """
        return None

    async def attach(self, node: Node, ps: PrimaryStorageInfo,
                     hosts: Sequence[HostInfo]) -> dict[str, Capacity | None]:
        """Prepare the storage on ``hosts``, at most :data:`HOST_CONCURRENCY` at a time.

        Returns what each host reported, by host uuid. If any host fails, a ``PS.1001``
        error naming the (first) failed host, its cause attached, is raised once every host
        has answered; the hosts that succeeded stay prepared (the caller decides: attaching
        releases them all again, reconnecting leaves them be).
        """
        limit = asyncio.Semaphore(HOST_CONCURRENCY)

        async def one(host: HostInfo) -> Capacity | None:
            async with limit:
                return await self.prepare_host(node, ps, host)

        results = await asyncio.gather(*(one(h) for h in hosts), return_exceptions=True)
        failed = [(h, r) for h, r in zip(hosts, results, strict=True)
                  if isinstance(r, BaseException)]
        if failed:
            host, error = failed[0]
            raise prepare_failed(ps, host, error)
        return {h.uuid: r for h, r in zip(hosts, results, strict=True)
                if not isinstance(r, BaseException)}

    async def detach(self, node: Node, ps: PrimaryStorageInfo,
                     hosts: Sequence[HostInfo]) -> None:
        """Release the storage on ``hosts``; failures are logged, never raised."""
        limit = asyncio.Semaphore(HOST_CONCURRENCY)

        async def one(host: HostInfo) -> None:
            async with limit:
                try:
                    await self.release_host(node, ps, host)
                except Exception as exc:  # noqa: BLE001 - a host that cannot unmount
                    log.warning("releasing primary storage %s (%s) on host %s (%s) failed: %s",
                                ps.name, ps.uuid, host.name, host.uuid, exc)

        await asyncio.gather(*(one(h) for h in hosts))

    # ------------------------------------------------------------------ volumes (VM issue)
    #
    # The defaults send ZStack-style agent commands to a host (``host_call``) under
    # :attr:`agent_path`; a host that does not know a command answers it as a simulated host
    # does ({"success": true}), so the paths a driver's agent serves are its business.

    #: The prefix of this storage's agent commands (``/localstorage``, ``/nfsprimarystorage``).
    agent_path: ClassVar[str] = "/primarystorage"

    def volume_root(self, ps: PrimaryStorageInfo) -> str:
        """The directory under which volumes, snapshots and the image cache live."""
        return (ps.mountPath or ps.url).rstrip("/")

    async def agent(self, node: Node, host: HostInfo, command: str,
                    body: dict[str, Any]) -> dict[str, Any]:
        """Send ``{agent_path}{command}`` to ``host``; the reply (``HOST.1001`` on failure)."""
        from zplugins.compute.public import host_call

        return await host_call(node, host, f"{self.agent_path}{command}", body)

    async def download_to_image_cache(self, node: Node, ps: PrimaryStorageInfo,
                                      host: HostInfo, image_uuid: str, image_format: str,
                                      backup_storage_uuid: str,
                                      backup_storage_path: str | None) -> str:
        """Copy an image from backup storage into the storage's image cache; its url there."""
        url = f"{self.volume_root(ps)}/imagecache/template/{image_uuid}/{image_uuid}." \
              f"{image_format or 'qcow2'}"
        reply = await self.agent(node, host, "/imagecache/download", {
            "primaryStorageUuid": ps.uuid, "imageUuid": image_uuid,
            "backupStorageUuid": backup_storage_uuid,
            "backupStorageInstallPath": backup_storage_path, "primaryStorageInstallPath": url})
        return str(reply.get("installPath") or url)

    async def create_root_volume(self, node: Node, ps: PrimaryStorageInfo, host: HostInfo,
                                 volume_uuid: str, cache_url: str, size: int) -> str:
        """Clone a root volume of ``size`` bytes from the cached image; its install path."""
        path = f"{self.volume_root(ps)}/rootVolumes/vol-{volume_uuid}/{volume_uuid}.qcow2"
        reply = await self.agent(node, host, "/volume/createvolumefromcache", {
            "primaryStorageUuid": ps.uuid, "volumeUuid": volume_uuid,
            "templatePathInCache": cache_url, "installUrl": path, "virtualSize": size})
        return str(reply.get("installPath") or path)

    async def create_empty_volume(self, node: Node, ps: PrimaryStorageInfo, host: HostInfo,
                                  volume_uuid: str, size: int) -> str:
        """Create an empty data volume of ``size`` bytes; its install path."""
        path = f"{self.volume_root(ps)}/dataVolumes/vol-{volume_uuid}/{volume_uuid}.qcow2"
        reply = await self.agent(node, host, "/volume/createempty", {
            "primaryStorageUuid": ps.uuid, "volumeUuid": volume_uuid, "installUrl": path,
            "size": size})
        return str(reply.get("installPath") or path)

    async def delete_volume(self, node: Node, ps: PrimaryStorageInfo, host: HostInfo | None,
                            path: str) -> None:
        """Delete a volume's (or a snapshot's, or a cached image's) bits at ``path``.

        ``host`` is where the bits are for a storage local to hosts; ``None`` lets the driver
        pick any connected host that reaches the storage (``PS.1004`` when there is none).
        """
        host = host or await self.any_host(node, ps)
        await self.agent(node, host, "/delete", {"primaryStorageUuid": ps.uuid,
                                                 "path": path})

    async def take_snapshot(self, node: Node, ps: PrimaryStorageInfo, host: HostInfo,
                            volume_uuid: str, volume_path: str,
                            snapshot_uuid: str) -> tuple[str, int]:
        """Snapshot a volume: the snapshot's install path and size in bytes (what it uses on
        the storage; by default what the agent reports, else 0)."""
        path = f"{volume_path.rsplit('/', 1)[0]}/snapshots/{snapshot_uuid}.qcow2"
        reply = await self.agent(node, host, "/snapshot/take", {
            "primaryStorageUuid": ps.uuid, "volumeUuid": volume_uuid,
            "volumeInstallPath": volume_path, "installPath": path})
        return str(reply.get("snapshotInstallPath") or path), int(reply.get("size") or 0)

    async def revert_snapshot(self, node: Node, ps: PrimaryStorageInfo, host: HostInfo,
                              volume_path: str, snapshot_path: str) -> str:
        """Make the volume what it was at the snapshot; the volume's (new) install path."""
        reply = await self.agent(node, host, "/snapshot/revert", {
            "primaryStorageUuid": ps.uuid, "snapshotInstallPath": snapshot_path,
            "volumeInstallPath": volume_path})
        return str(reply.get("newVolumeInstallPath") or volume_path)

    async def delete_snapshot(self, node: Node, ps: PrimaryStorageInfo, host: HostInfo | None,
                              path: str) -> None:
        """Delete a snapshot's bits (by default as :meth:`delete_volume`)."""
        await self.delete_volume(node, ps, host, path)

    async def create_template(self, node: Node, ps: PrimaryStorageInfo, host: HostInfo,
                              volume_path: str, image_uuid: str, backup_storage_uuid: str,
                              backup_storage_url: str) -> tuple[str, int]:
        """Copy a volume as a template and upload it to backup storage: its install path on
        the backup storage and its size in bytes (as the agent reports, else 0)."""
        path = f"{backup_storage_url.rstrip('/')}/rootVolumeTemplates/{image_uuid}/" \
               f"{image_uuid}.qcow2"
        reply = await self.agent(node, host, "/volume/createtemplate/upload", {
            "primaryStorageUuid": ps.uuid, "volumePath": volume_path, "imageUuid": image_uuid,
            "backupStorageUuid": backup_storage_uuid, "backupStorageInstallPath": path})
        return str(reply.get("backupStorageInstallPath") or path), int(reply.get("size") or 0)

    async def any_host(self, node: Node, ps: PrimaryStorageInfo) -> HostInfo:
        """A connected host of a cluster the storage is attached to (``PS.1004`` if none)."""
        from zplugins.compute.public import cluster_hosts
        from zplugins.storage.primary_models import PrimaryStorageClusterRefVO

        def clusters(session: Any) -> list[str]:
            from sqlalchemy import select

            return list(session.scalars(select(PrimaryStorageClusterRefVO.clusterUuid).where(
                PrimaryStorageClusterRefVO.primaryStorageUuid == ps.uuid).order_by(
                    PrimaryStorageClusterRefVO.clusterUuid)))

        for cluster_uuid in await node.db.run(clusters):
            for host in await cluster_hosts(node, cluster_uuid):
                if host.state != "Maintenance":
                    return host
        raise ZError(PS_NO_HOST, "no host reaches the primary storage",
                     f"{ps.type} primary storage {ps.name} ({ps.uuid}) is attached to no "
                     "cluster with a connected host; attach it to a cluster or reconnect a "
                     "host, then try again")


def prepare_failed(ps: PrimaryStorageInfo, host: HostInfo, error: BaseException) -> ZError:
    """``PS.1001``: the storage could not be prepared on ``host``."""
    cause = error if isinstance(error, ZError) else None
    return ZError(PS_ATTACH_FAILED, "cannot prepare primary storage on a host",
                  f"{ps.type} primary storage {ps.name} ({ps.uuid}) could not be prepared on "
                  f"host {host.name} ({host.uuid}, {host.managementIp}): {error}",
                  cause=cause)
