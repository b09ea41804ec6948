"""What the volume steps, the volume APIs and the snapshot APIs share: reading volumes,
choosing and reserving primary storage, and calling the storage's driver."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from zcore.db import Base, delete_resource
from zcore.errors import RESOURCE_NOT_FOUND, ZError
from zplugins.compute.public import VolumeTO
from zplugins.storage.primary_driver import PrimaryStorageDriver, PrimaryStorageInfo
from zplugins.storage.primary_models import PrimaryStorageClusterRefVO, PrimaryStorageVO
from zplugins.storage.primary_ops import driver_for, release, reserve, reserve_first
from zplugins.storage.volume_models import VolumeSnapshotTreeVO, VolumeSnapshotVO, VolumeVO

if TYPE_CHECKING:
    from zcore.node import Node
    from zplugins.compute.public import HostInfo

log = logging.getLogger("zplugins.storage.volumes")

VOLUME = "VolumeVO"
SNAPSHOT = "VolumeSnapshotVO"
SNAPSHOT_TREE = "VolumeSnapshotTreeVO"

#: No primary storage fits a volume.
PS_ALLOCATION_FAILED = "PS_ALLOCATION.1001"
#: A volume operation is not possible in the volume's status (or type).
VOLUME_STATE_ERROR = "VOLUME.1000"
#: No backup storage holds the image where it is needed.
BS_ALLOCATION_FAILED = "BACKUP_STORAGE.1001"

#: Primary storage takes new volumes only in this state and status.
PS_USABLE = ("Enabled", "Connected")


def table(name: str) -> Table:
    """Another plugin's table by name (for conditions and plain updates)."""
    return Base.metadata.tables[name]


@dataclass(frozen=True, slots=True)
class VolumePlan:
    """A volume ``vm-create`` will make: its type, size, disk offering and device id."""

    type: str
    size: int
    deviceId: int
    diskOfferingUuid: str | None = None


def get_volume(session: Session, uuid: str) -> VolumeVO:
    row = session.get(VolumeVO, uuid, populate_existing=True)
    if row is None:
        raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                     f"{VOLUME} {uuid} does not exist (any more)")
    return row


def volume_to(row: Any, ps_type: str | None = None) -> VolumeTO:
    """From a :class:`VolumeVO` row (or any row with its columns)."""
    return VolumeTO(row.uuid, row.type, row.deviceId if row.deviceId is not None else -1,
                    row.size, row.primaryStorageUuid, row.installPath, row.format or "qcow2",
                    ps_type, row.isShareable)


_PS = PrimaryStorageVO
_PS_INFO = select(_PS.uuid, _PS.name, _PS.type, _PS.url, _PS.zoneUuid, _PS.mountPath, _PS.state,
                  _PS.status, _PS.totalPhysicalCapacity, _PS.availablePhysicalCapacity).where(
    _PS.uuid == bindparam("uuid"))


def ps_info(session: Session, uuid: str) -> PrimaryStorageInfo:
    row = session.connection().execute(_PS_INFO, {"uuid": uuid}).first()
    if row is None:
        raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                     f"PrimaryStorageVO {uuid} does not exist (any more)")
    return PrimaryStorageInfo.of(row)


def ps_driver(node: Node, ps: PrimaryStorageInfo) -> PrimaryStorageDriver:
    return driver_for(node, ps.type)


def usable_ps_of_cluster(cluster_uuid: str | None, size: int) -> Any:
    """Primary storage attached to ``cluster_uuid`` that can take ``size`` bytes, the most
    available first."""
    query = (select(PrimaryStorageVO.uuid)
             .join(PrimaryStorageClusterRefVO,
                   PrimaryStorageClusterRefVO.primaryStorageUuid == PrimaryStorageVO.uuid)
             .where(PrimaryStorageVO.state == PS_USABLE[0],
                    PrimaryStorageVO.status == PS_USABLE[1],
                    PrimaryStorageVO.availableCapacity >= size))
    if cluster_uuid is not None:
        query = query.where(PrimaryStorageClusterRefVO.clusterUuid == cluster_uuid)
    return query.order_by(PrimaryStorageVO.availableCapacity.desc(), PrimaryStorageVO.uuid)


def reserve_on_cluster(session: Session, cluster_uuid: str, size: int, *,
                       only: str | None = None, what: str = "a volume") -> str:
    """Reserve ``size`` bytes on the attached primary storage of ``cluster_uuid`` with the
    most available capacity (``only``: that one); its uuid, or ``PS_ALLOCATION.1001``."""
    query = usable_ps_of_cluster(cluster_uuid, size)
    if only is not None:
        query = query.where(PrimaryStorageVO.uuid == only)
    ps_uuid = reserve_first(session, query, size)
    if ps_uuid is not None:
        return ps_uuid
    for ps_uuid in list(session.scalars(query)):
        # Another creation may have taken the space since the query: try the next one.
        if reserve(session, ps_uuid, size):
            return ps_uuid
    pinned = f" primary storage {only}" if only else " any primary storage"
    raise ZError(PS_ALLOCATION_FAILED, "no primary storage fits",
                 f"{what} of {size} bytes fits on{pinned} attached to cluster {cluster_uuid} "
                 "(Enabled, Connected, with enough availableCapacity); add capacity, attach "
                 "primary storage to the cluster or ask for a smaller size")


def release_volume_capacity(session: Session, row: VolumeVO) -> None:
    """Give back what a volume and its snapshots hold on their primary storage."""
    if row.primaryStorageUuid is not None and row.status != "NotInstantiated":
        release(session, row.primaryStorageUuid, row.size)
    for snap in session.scalars(select(VolumeSnapshotVO).where(
            VolumeSnapshotVO.volumeUuid == row.uuid)):
        if snap.primaryStorageUuid is not None and snap.size:
            release(session, snap.primaryStorageUuid, snap.size)


def forget_volume(session: Session, uuid: str) -> None:
    """Remove a volume's rows (its snapshots' too), its capacity given back."""
    row = session.get(VolumeVO, uuid, populate_existing=True)
    if row is None:
        return
    release_volume_capacity(session, row)
    for snap in list(session.scalars(select(VolumeSnapshotVO).where(
            VolumeSnapshotVO.volumeUuid == uuid))):
        delete_resource(session, snap)
    session.flush()
    for tree in list(session.scalars(select(VolumeSnapshotTreeVO).where(
            VolumeSnapshotTreeVO.volumeUuid == uuid))):
        session.delete(tree)
    vm = table("VmInstanceVO")
    session.execute(update(vm).where(vm.c.rootVolumeUuid == uuid).values(rootVolumeUuid=None))
    delete_resource(session, row)


@dataclass(frozen=True, slots=True)
class Bits:
    """Where a volume's (or snapshot's) bits are, to delete them."""

    ps: PrimaryStorageInfo
    paths: tuple[str, ...]
    host_uuid: str | None


def bits_of(session: Session, uuid: str, host_uuid: str | None = None) -> Bits | None:
    """The paths of a volume and its snapshots, or ``None`` if it has no bits."""
    row = session.get(VolumeVO, uuid, populate_existing=True)
    if row is None or row.primaryStorageUuid is None or row.status == "NotInstantiated":
        return None
    paths = [s.primaryStorageInstallPath for s in session.scalars(select(VolumeSnapshotVO).where(
        VolumeSnapshotVO.volumeUuid == uuid)) if s.primaryStorageInstallPath]
    if row.installPath:
        paths.append(row.installPath)
    return Bits(ps_info(session, row.primaryStorageUuid), tuple(paths),
                row.hostUuid or host_uuid)


async def delete_bits(node: Node, bits: Bits | None) -> tuple[str, ...]:
    """Delete the bits on their storage; the paths that could not be deleted (logged).

    Bits on a host's own disk (``host_uuid``) are deleted through that host only: while it
    is not connected, none are tried.
    """
    if bits is None:
        return ()
    from zplugins.compute.public import get_host

    host: HostInfo | None = None
    if bits.host_uuid is not None:
        host = await get_host(node, bits.host_uuid)
    driver = ps_driver(node, bits.ps)
    if host is None or host.status != "Connected":
        if driver.host_local and bits.host_uuid is not None:
            return bits.paths  # only that host can delete them
        host = None
    left: list[str] = []
    for path in bits.paths:
        try:
            await driver.delete_volume(node, bits.ps, host, path)
        except Exception as exc:  # noqa: BLE001 - the GC tries again
            left.append(path)
            log.warning("deleting %s on primary storage %s (%s) failed; it will be tried "
                        "again: %s", path, bits.ps.name, bits.ps.uuid, exc)
    return tuple(left)


#: The GC job kind that deletes bits a volume left on storage that could not be reached.
DELETE_BITS = "storage.delete-volume-bits"
#: Seconds between two tries of such a job on shared storage (bits on a host's own disk are
#: tried again when the host connects).
DELETE_BITS_INTERVAL = 300.0


def leave_bits(session: Session, node: Node, volume_uuid: str, bits: Bits | None,
               paths: Sequence[str]) -> None:
    """In the transaction that forgets a volume: a GC job for the ``paths`` left behind."""
    if bits is None or not paths:
        return
    from zplugins.compute.public import host_event

    local = ps_driver(node, bits.ps).host_local and bits.host_uuid is not None
    node.gc.submit(session, DELETE_BITS, f"delete-volume-{volume_uuid}",
                   {"primaryStorageUuid": bits.ps.uuid, "paths": list(paths),
                    "hostUuid": bits.host_uuid},
                   trigger=host_event(bits.host_uuid) if local and bits.host_uuid else None,
                   interval=None if local else DELETE_BITS_INTERVAL)


async def delete_left_bits(node: Node, context: dict[str, Any]) -> None:
    """Run a :data:`DELETE_BITS` job: done when every path is deleted, or the storage (or,
    for bits on a host's own disk, the host) is gone."""
    def read(session: Session) -> PrimaryStorageInfo | None:
        row = session.get(PrimaryStorageVO, context["primaryStorageUuid"])
        return PrimaryStorageInfo.of(row) if row is not None else None

    ps = await node.db.run(read)
    if ps is None:
        return
    host_uuid = context.get("hostUuid")
    if ps_driver(node, ps).host_local and host_uuid is not None:
        from zplugins.compute.public import get_host

        if await get_host(node, host_uuid) is None:
            return
    left = await delete_bits(node, Bits(ps, tuple(context["paths"]), host_uuid))
    if left:
        raise ZError("VOLUME.1001", "volume bits not deleted",
                     f"{len(left)} path(s) on primary storage {ps.name} ({ps.uuid}) are still "
                     f"there: {', '.join(left)}")


def deletion_policy(node: Node, category: str) -> str:
    try:
        return str(node.global_config.get(category, "deletionPolicy"))
    except Exception:  # noqa: BLE001 - the option is declared by another plugin
        return "Delay"


def instantiated(volumes: Sequence[VolumeVO]) -> list[VolumeVO]:
    return [v for v in volumes if v.status != "NotInstantiated"]
