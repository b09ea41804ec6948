"""The storage plugin's steps of the VM chains (``flows/vm-*.yaml``).

``vm-create``: select-backup-storage (provides ``image``, an :class:`ImageTO`) ->
plan-volumes (``volume_plans``; hosts must reach a primary storage that fits) ->
allocate-primary-storage (``volume_primary_storage``: one uuid per plan, capacity reserved)
-> allocate-volumes (``volumes``: rows ``Creating``) -> instantiate-volumes (image cache, the
root volume from it, empty data volumes; ``Ready``). Each undoes its work on rollback.

``vm-start``: load-volumes. ``vm-destroy``/``vm-recover``/``vm-expunge``: the root volume
``Deleted``, ``Ready`` again, or gone (bits, capacity, row) with data volumes detached.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zcore import FlowInsertion, FlowStep
from zcore.db import (
    add_resource_row,
    delete_resource,
    new_uuid,
    sent_together,
    table_of,
    utcnow,
)
from zcore.errors import INVALID_ARGUMENT, OPERATION_ERROR, ZError
from zcore.flow import FlowContext, Step
from zplugins.compute.public import VolumeTO
from zplugins.storage.backup import BackupStorageVO, BackupStorageZoneRefVO
from zplugins.storage.image_models import ImageBackupStorageRefVO, ImageVO
from zplugins.storage.primary_driver import PrimaryStorageInfo
from zplugins.storage.primary_models import PrimaryStorageClusterRefVO, PrimaryStorageVO
from zplugins.storage.primary_ops import release
from zplugins.storage.volume_models import ImageCacheVO, VolumeVO
from zplugins.storage.volume_ops import (
    BS_ALLOCATION_FAILED,
    PS_USABLE,
    VOLUME,
    VolumePlan,
    bits_of,
    delete_bits,
    forget_volume,
    leave_bits,
    log,
    ps_driver,
    ps_info,
    reserve_on_cluster,
    table,
    volume_to,
)

if TYPE_CHECKING:
    from zcore.node import Node
    from zplugins.compute.public import HostInfo, VmSpec


@dataclass(frozen=True, slots=True)
class ImageTO:
    """The image a VM is created from, and the backup storage it is copied from."""

    uuid: str
    name: str
    size: int
    actualSize: int
    format: str
    mediaType: str
    platform: str | None
    guestOsType: str | None
    architecture: str | None
    backupStorageUuid: str
    backupStorageInstallPath: str | None


def _node(ctx: FlowContext) -> Node:
    node: Node = ctx.services
    return node


def _hosts() -> Any:
    return table("HostVO").c


# --------------------------------------------------------------------------- vm-create


# Statements built once: building one costs more than running it.
def _image_with_copies(in_zone: bool) -> Any:
    """An image with each Ready copy on an Enabled, Connected backup storage and each zone
    that storage is attached to (``zone``: in that zone only), most free space first; one
    row without a copy when there is none: one query."""
    copies = (
        select(ImageBackupStorageRefVO.imageUuid, ImageBackupStorageRefVO.backupStorageUuid,
               ImageBackupStorageRefVO.installPath, BackupStorageZoneRefVO.zoneUuid,
               BackupStorageVO.availableCapacity)
        .join(BackupStorageVO, BackupStorageVO.uuid == ImageBackupStorageRefVO.backupStorageUuid)
        .join(BackupStorageZoneRefVO,
              BackupStorageZoneRefVO.backupStorageUuid == BackupStorageVO.uuid)
        .where(ImageBackupStorageRefVO.status == "Ready", BackupStorageVO.state == "Enabled",
               BackupStorageVO.status == "Connected"))
    if in_zone:
        copies = copies.where(BackupStorageZoneRefVO.zoneUuid == bindparam("zone"))
    found = copies.subquery()
    return (select(ImageVO.uuid, ImageVO.name, ImageVO.state, ImageVO.status,
                   ImageVO.mediaType, ImageVO.size, ImageVO.actualSize, ImageVO.format,
                   ImageVO.platform, ImageVO.guestOsType, ImageVO.architecture,
                   found.c.backupStorageUuid, found.c.installPath, found.c.zoneUuid)
            .outerjoin(found, found.c.imageUuid == ImageVO.uuid)
            .where(ImageVO.uuid == bindparam("uuid"))
            .order_by(found.c.availableCapacity.desc()))


_IMAGE_WITH_COPIES = _image_with_copies(in_zone=False)
_IMAGE_WITH_COPIES_IN_ZONE = _image_with_copies(in_zone=True)
_VOLUMES, _VMS = table_of(VolumeVO), table("VmInstanceVO")
_INSERT_VOLUME = insert(_VOLUMES)
_SET_ROOT_VOLUME = update(_VMS).where(_VMS.c.uuid == bindparam("vm_uuid"))
_CACHED_IMAGE = select(ImageCacheVO.installUrl).where(
    ImageCacheVO.primaryStorageUuid == bindparam("ps"), ImageCacheVO.imageUuid == bindparam("image"))
_SET_VOLUME_READY = update(_VOLUMES).where(_VOLUMES.c.uuid == bindparam("volume_uuid"))


def select_image(session: Session, vm: VmSpec) -> tuple[ImageTO, list[str]]:
    """The VM's image, a Ready backup storage holding it, and the zones where one is."""
    connection = session.connection()
    if vm.zoneUuid is None:
        rows = connection.execute(_IMAGE_WITH_COPIES, {"uuid": vm.imageUuid}).all()
    else:
        rows = connection.execute(_IMAGE_WITH_COPIES_IN_ZONE,
                                  {"uuid": vm.imageUuid, "zone": vm.zoneUuid}).all()
    image = rows[0] if rows else None
    if image is None:
        raise ZError(INVALID_ARGUMENT, "invalid argument",
                     f"image {vm.imageUuid} of VM '{vm.name}' does not exist (any more)")
    if image.status != "Ready" or image.state != "Enabled":
        raise ZError(INVALID_ARGUMENT, "image not usable",
                     f"image '{image.name}' ({image.uuid}) is {image.state}/{image.status}; a "
                     "VM needs an Enabled, Ready image: enable it, wait for its download or "
                     "recover it")
    if image.mediaType != "RootVolumeTemplate":
        raise ZError(INVALID_ARGUMENT, "image not usable",
                     f"image '{image.name}' ({image.uuid}) is a {image.mediaType}; only "
                     "RootVolumeTemplate images can make a root volume")
    found = [row for row in rows if row.backupStorageUuid is not None]
    if not found:
        where = f"zone {vm.zoneUuid}" if vm.zoneUuid else "any zone"
        raise ZError(BS_ALLOCATION_FAILED, "no backup storage holds the image",
                     f"image '{image.name}' ({image.uuid}) is on no Enabled, Connected backup "
                     f"storage attached to {where}; attach or reconnect a backup storage that "
                     "holds it")
    ref = found[0]
    zones = sorted({row.zoneUuid for row in found})
    return ImageTO(image.uuid, image.name, image.size, image.actualSize, image.format,
                   image.mediaType, image.platform, image.guestOsType, image.architecture,
                   ref.backupStorageUuid, ref.installPath), zones


class SelectBackupStorage(Step):
    requires = ("vm",)
    provides = ("image",)

    async def run(self, ctx: FlowContext) -> None:
        image, zones = await _node(ctx).db.read(select_image, ctx["vm"])
        ctx["image"] = image
        conditions = ctx.get("host_conditions")
        if conditions is not None:
            conditions.append(_hosts().zoneUuid.in_(zones))


def plan_volumes(vm: VmSpec, image: ImageTO) -> list[VolumePlan]:
    root = vm.rootDiskSize or image.size or image.actualSize
    plans = [VolumePlan("Root", root, 0, vm.rootDiskOfferingUuid)]
    for device_id, (offering, size) in enumerate(vm.dataDiskSizes, start=1):
        plans.append(VolumePlan("Data", size, device_id, offering))
    return plans


def reachable_clusters(size: int, only: str | None = None) -> Any:
    """Clusters with an attached, usable primary storage that can take ``size`` bytes."""
    query = (select(PrimaryStorageClusterRefVO.clusterUuid)
             .join(PrimaryStorageVO,
                   PrimaryStorageVO.uuid == PrimaryStorageClusterRefVO.primaryStorageUuid)
             .where(PrimaryStorageVO.state == PS_USABLE[0],
                    PrimaryStorageVO.status == PS_USABLE[1],
                    PrimaryStorageVO.availableCapacity >= size))
    if only is not None:
        query = query.where(PrimaryStorageVO.uuid == only)
    return query


class PlanVolumes(Step):
    requires = ("vm", "image")
    provides = ("volume_plans",)

    async def run(self, ctx: FlowContext) -> None:
        vm: VmSpec = ctx["vm"]
        plans = plan_volumes(vm, ctx["image"])
        ctx["volume_plans"] = plans
        conditions = ctx.get("host_conditions")
        if conditions is None:
            return
        hosts = _hosts()
        conditions.append(hosts.clusterUuid.in_(
            reachable_clusters(plans[0].size, vm.primaryStorageUuidForRootVolume)))
        for plan in plans[1:]:
            conditions.append(hosts.clusterUuid.in_(reachable_clusters(plan.size)))


def reserve_plans(session: Session, cluster_uuid: str, plans: list[VolumePlan],
                  root_ps: str | None) -> list[str]:
    """Reserve every plan's size on a primary storage of the cluster, in one transaction."""
    return [reserve_on_cluster(session, cluster_uuid, plan.size,
                               only=root_ps if plan.type == "Root" else None,
                               what=f"the {plan.type.lower()} volume (device {plan.deviceId})")
            for plan in plans]


def release_plans(session: Session, plans: list[VolumePlan], ps_uuids: list[str]) -> None:
    for plan, ps_uuid in zip(plans, ps_uuids, strict=False):
        release(session, ps_uuid, plan.size)


class AllocatePrimaryStorage(Step):
    requires = ("vm", "volume_plans", "host")
    provides = ("volume_primary_storage",)

    async def run(self, ctx: FlowContext) -> None:
        host: HostInfo = ctx["host"]
        ctx["volume_primary_storage"] = await _node(ctx).db.run(
            reserve_plans, host.clusterUuid, ctx["volume_plans"],
            ctx["vm"].primaryStorageUuidForRootVolume)

    async def rollback(self, ctx: FlowContext) -> None:
        picked = ctx.get("volume_primary_storage")
        if picked:
            await _node(ctx).db.run(release_plans, ctx["volume_plans"], picked)
            ctx["volume_primary_storage"] = None


def volume_name(vm_name: str, plan: VolumePlan) -> str:
    if plan.type == "Root":
        return f"ROOT-for-{vm_name}"[:255]
    return f"DATA-for-{vm_name}-{plan.deviceId}"[:255]


def ps_infos(session: Session, ps_uuids: list[str]) -> dict[str, PrimaryStorageInfo]:
    """Each primary storage by uuid (``SYS.1003`` if one is gone)."""
    return {uuid: ps_info(session, uuid) for uuid in dict.fromkeys(ps_uuids)}


def _ps_and_cached_image(session: Session, ps_uuids: list[str], root_ps: str, image_uuid: str
                         ) -> tuple[dict[str, PrimaryStorageInfo], str | None]:
    """:func:`ps_infos`, and the url of the image in the image cache of the root volume's
    primary storage (``None`` when it is not cached there yet)."""
    return ps_infos(session, ps_uuids), session.scalar(_CACHED_IMAGE, {
        "ps": root_ps, "image": image_uuid})


def insert_volumes(session: Session, vm: VmSpec, vm_uuid: str, image: ImageTO,
                   plans: list[VolumePlan], ps_uuids: list[str],
                   types: dict[str, str]) -> list[VolumeTO]:
    """The volumes' rows; ``types``: the type of each primary storage, read beforehand (a
    type never changes)."""
    # Core INSERTs (a ResourceVO and a VolumeVO row per volume, as add_resource writes
    # them): the unit of work would cost more than the statements. All in one round trip.
    now = utcnow()
    volumes = []
    with sent_together(session) as connection:
        for plan, ps_uuid in zip(plans, ps_uuids, strict=True):
            root = plan.type == "Root"
            uuid, fmt, name = new_uuid(), (image.format if root else "qcow2"), \
                volume_name(vm.name, plan)
            values = {"uuid": uuid, "name": name, "type": plan.type,
                      "size": plan.size, "primaryStorageUuid": ps_uuid,
                      "vmInstanceUuid": vm_uuid, "deviceId": plan.deviceId,
                      "diskOfferingUuid": plan.diskOfferingUuid,
                      "rootImageUuid": image.uuid if root else None,
                      "format": fmt, "status": "Creating",
                      "state": "Enabled", "actualSize": 0, "lastAttachDate": now,
                      "createDate": now, "lastOpDate": now}
            add_resource_row(session, uuid, VOLUME, name=name,
                             owner_account_uuid=vm.accountUuid, create_date=now)
            connection.execute(_INSERT_VOLUME, values)
            volumes.append(VolumeTO(uuid, plan.type, plan.deviceId, plan.size, ps_uuid, None,
                                    fmt or "qcow2", types[ps_uuid], False))
        connection.execute(_SET_ROOT_VOLUME,
                           {"vm_uuid": vm_uuid, "rootVolumeUuid": volumes[0].uuid})
    return volumes


def delete_volume_rows(session: Session, vm_uuid: str, uuids: list[str]) -> None:
    vms = table("VmInstanceVO")
    session.execute(update(vms).where(vms.c.uuid == vm_uuid).values(rootVolumeUuid=None))
    for uuid in uuids:
        row = session.get(VolumeVO, uuid)
        if row is not None:
            delete_resource(session, row)


class AllocateVolumes(Step):
    requires = ("vm", "vm_uuid", "image", "volume_plans", "volume_primary_storage")
    provides = ("volumes",)

    async def run(self, ctx: FlowContext) -> None:
        node, ps_uuids = _node(ctx), ctx["volume_primary_storage"]
        # Read beside the single writer, not by it; instantiate-volumes uses them too, and
        # the image's place in the root volume's storage's cache (the usual case: there).
        infos, url = await node.db.read(_ps_and_cached_image, ps_uuids, ps_uuids[0],
                                        ctx["image"].uuid)
        ctx[_PS_INFOS], ctx[_CACHED_URL] = infos, (ps_uuids[0], ctx["image"].uuid, url)
        ctx["volumes"] = await node.db.run(
            insert_volumes, ctx["vm"], ctx["vm_uuid"], ctx["image"], ctx["volume_plans"],
            ps_uuids, {uuid: ps.type for uuid, ps in infos.items()})

    async def rollback(self, ctx: FlowContext) -> None:
        volumes = ctx.get("volumes")
        if volumes:
            await _node(ctx).db.run(delete_volume_rows, ctx["vm_uuid"],
                                    [v.uuid for v in volumes])
            ctx["volumes"] = None


async def image_cache(node: Node, ps_uuid: str, host: HostInfo, image: ImageTO) -> str:
    """The url of ``image`` in the image cache of ``ps_uuid``, copied there if it is not."""
    def cached(session: Session) -> str | None:
        return session.scalar(_CACHED_IMAGE, {"ps": ps_uuid, "image": image.uuid})

    def record(session: Session, url: str) -> None:
        session.add(ImageCacheVO(primaryStorageUuid=ps_uuid, imageUuid=image.uuid,
                                 installUrl=url, mediaType=image.mediaType,
                                 size=image.actualSize))

    async def fill() -> str:
        url = await node.db.run(cached)
        if url is not None:
            return url
        ps = await node.db.run(ps_info, ps_uuid)
        url = await ps_driver(node, ps).download_to_image_cache(
            node, ps, host, image.uuid, image.format, image.backupStorageUuid,
            image.backupStorageInstallPath)
        try:
            await node.db.run(record, url)
        except IntegrityError:  # another node cached it meanwhile
            pass
        return url

    # Cached already (the usual case): no need to queue behind other creations.
    url = await node.db.read(cached)
    if url is not None:
        return url
    # One copy per storage and image, however many VMs are created from it at once.
    return await node.queues.run(f"imagecache-{ps_uuid}-{image.uuid}", 1, fill)


def mark_ready(session: Session, paths: dict[str, str], actual: dict[str, int],
               hosts: dict[str, str]) -> None:
    """Volumes ``Ready`` at their paths; ``hosts`` names the host of those on storage local
    to hosts."""
    with sent_together(session) as connection:
        for uuid, path in paths.items():
            connection.execute(_SET_VOLUME_READY, {
                "volume_uuid": uuid, "installPath": path, "status": "Ready",
                "actualSize": actual.get(uuid, 0), "hostUuid": hosts.get(uuid)})


_CREATED = "_storage_created_volumes"
#: The primary storage allocate-volumes read, by uuid, for instantiate-volumes.
_PS_INFOS = "_storage_primary_storage"
#: (primary storage, image, url in that storage's image cache or ``None``) as
#: allocate-volumes read them, for the root volume.
_CACHED_URL = "_storage_cached_image_url"


class InstantiateVolumes(Step):
    requires = ("vm", "image", "host", "volumes")

    async def run(self, ctx: FlowContext) -> None:
        node = _node(ctx)
        host: HostInfo = ctx["host"]
        image: ImageTO = ctx["image"]
        created: list[tuple[str, str]] = []
        ctx[_CREATED] = created
        done: list[VolumeTO] = []
        local: dict[str, str] = {}
        known: dict[str, PrimaryStorageInfo] = ctx.get(_PS_INFOS) or {}
        for volume in ctx["volumes"]:
            ps = known.get(volume.primaryStorageUuid or "")
            if ps is None:
                ps = await node.db.read(ps_info, volume.primaryStorageUuid)
            driver = ps_driver(node, ps)
            if driver.host_local:
                local[volume.uuid] = host.uuid
            if volume.type == "Root":
                read_ps, read_image, url = ctx.get(_CACHED_URL) or (None, None, None)
                if url is None or (read_ps, read_image) != (ps.uuid, image.uuid):
                    url = await image_cache(node, ps.uuid, host, image)
                path = await driver.create_root_volume(node, ps, host, volume.uuid, url,
                                                       volume.size)
            else:
                path = await driver.create_empty_volume(node, ps, host, volume.uuid,
                                                        volume.size)
            created.append((ps.uuid, path))
            done.append(_with_path(volume, path))
        actual = {v.uuid: image.actualSize for v in done if v.type == "Root"}
        await node.db.run(mark_ready, {v.uuid: v.installPath or "" for v in done}, actual,
                          local)
        ctx["volumes"] = done

    async def rollback(self, ctx: FlowContext) -> None:
        node = _node(ctx)
        host: HostInfo | None = ctx.get("host")
        for ps_uuid, path in reversed(ctx.get(_CREATED) or []):
            try:
                ps = await node.db.run(ps_info, ps_uuid)
                await ps_driver(node, ps).delete_volume(node, ps, host, path)
            except Exception:  # noqa: BLE001 - rolling back as much as possible
                log.warning("rolling back volume %s on primary storage %s failed", path,
                            ps_uuid, exc_info=True)


def _with_path(volume: VolumeTO, path: str) -> VolumeTO:
    from dataclasses import replace

    return replace(volume, installPath=path)


# --------------------------------------------------------------------------- other chains


def vm_volumes(session: Session, vm_uuid: str) -> list[VolumeTO]:
    rows = list(session.scalars(select(VolumeVO).where(
        VolumeVO.vmInstanceUuid == vm_uuid, VolumeVO.status != "NotInstantiated")))
    rows.sort(key=lambda r: (r.type != "Root", r.deviceId if r.deviceId is not None else 0))
    types = {u: ps_info(session, u).type for u in {r.primaryStorageUuid for r in rows} if u}
    return [volume_to(r, types.get(r.primaryStorageUuid or "")) for r in rows]


def _volume_hosts(session: Session, vm_uuid: str) -> list[str]:
    """The hosts whose own disks hold volumes of the VM (local storage)."""
    return sorted(set(session.scalars(select(VolumeVO.hostUuid).where(
        VolumeVO.vmInstanceUuid == vm_uuid, VolumeVO.hostUuid.is_not(None)))))


class LoadVolumes(Step):
    """``load-volumes``: the VM's volumes; the host must reach their storage (and be the
    one holding those on local storage)."""

    requires = ("vm_uuid",)
    provides = ("volumes",)

    async def run(self, ctx: FlowContext) -> None:
        node = _node(ctx)
        volumes = await node.db.run(vm_volumes, ctx["vm_uuid"])
        ctx["volumes"] = volumes
        conditions = ctx.get("host_conditions")
        if conditions is None:
            return
        hosts = _hosts()
        for host_uuid in await node.db.run(_volume_hosts, ctx["vm_uuid"]):
            conditions.append(hosts.uuid == host_uuid)
        for ps_uuid in sorted({v.primaryStorageUuid for v in volumes if v.primaryStorageUuid}):
            conditions.append(hosts.clusterUuid.in_(
                select(PrimaryStorageClusterRefVO.clusterUuid).where(
                    PrimaryStorageClusterRefVO.primaryStorageUuid == ps_uuid)))


def set_root_status(session: Session, vm_uuid: str, status: str) -> None:
    session.execute(update(VolumeVO).where(
        VolumeVO.vmInstanceUuid == vm_uuid, VolumeVO.type == "Root").values(
            status=status, lastOpDate=utcnow()).execution_options(synchronize_session=False))


class DestroyVmVolumes(Step):
    """The root volume ``Deleted``: kept (with its capacity) until the VM is expunged."""

    requires = ("vm_uuid",)

    async def run(self, ctx: FlowContext) -> None:
        await _node(ctx).db.run(set_root_status, ctx["vm_uuid"], "Deleted")

    async def rollback(self, ctx: FlowContext) -> None:
        await _node(ctx).db.run(set_root_status, ctx["vm_uuid"], "Ready")


class RecoverVmVolumes(Step):
    requires = ("vm_uuid",)

    async def run(self, ctx: FlowContext) -> None:
        await _node(ctx).db.run(set_root_status, ctx["vm_uuid"], "Ready")

    async def rollback(self, ctx: FlowContext) -> None:
        await _node(ctx).db.run(set_root_status, ctx["vm_uuid"], "Deleted")


def _root_of(session: Session, vm_uuid: str) -> tuple[str | None, Any]:
    root = session.scalar(select(VolumeVO.uuid).where(
        VolumeVO.vmInstanceUuid == vm_uuid, VolumeVO.type == "Root"))
    vms = table("VmInstanceVO")
    host = session.execute(select(vms.c.hostUuid, vms.c.lastHostUuid).where(
        vms.c.uuid == vm_uuid)).first()
    host_uuid = (host[0] or host[1]) if host is not None else None
    return root, bits_of(session, root, host_uuid) if root else None


def forget_vm_volumes(session: Session, vm_uuid: str, root_uuid: str | None) -> None:
    if root_uuid is not None:
        forget_volume(session, root_uuid)
    now = utcnow()
    session.execute(update(VolumeVO).where(VolumeVO.vmInstanceUuid == vm_uuid).values(
        vmInstanceUuid=None, deviceId=None, lastVmInstanceUuid=vm_uuid, lastDetachDate=now,
        lastOpDate=now).execution_options(synchronize_session=False))


class ExpungeVmVolumes(Step):
    """The root volume's bits, capacity and row go; data volumes are detached and kept."""

    requires = ("vm_uuid",)

    async def run(self, ctx: FlowContext) -> None:
        node = _node(ctx)
        root, bits = await node.db.run(_root_of, ctx["vm_uuid"])
        left = await delete_bits(node, bits)

        def forget(session: Session) -> None:
            forget_vm_volumes(session, ctx["vm_uuid"], root)
            if root is not None:
                leave_bits(session, node, root, bits, left)

        await node.db.run(forget)


def _volumes_in_use(session: Session, ps_uuid: str, cluster_uuid: str) -> list[str]:
    vms = table("VmInstanceVO")
    rows = session.execute(select(VolumeVO.uuid, vms.c.uuid, vms.c.name).join(
        vms, vms.c.uuid == VolumeVO.vmInstanceUuid).where(
        VolumeVO.primaryStorageUuid == ps_uuid, vms.c.clusterUuid == cluster_uuid).limit(11))
    return [f"volume {volume} of VM '{name}' ({vm})" for volume, vm, name in rows]


class RefuseDetachWithVolumes(Step):
    """``refuse-detach-with-volumes`` (primary-storage-detach): a primary storage that holds
    volumes of the cluster's VMs stays attached; destroy and expunge them, or detach the
    data volumes, first."""

    requires = ("primary_storage_uuid", "cluster_uuid")

    async def run(self, ctx: FlowContext) -> None:
        ps_uuid, cluster_uuid = ctx["primary_storage_uuid"], ctx["cluster_uuid"]
        used = await _node(ctx).db.run(_volumes_in_use, ps_uuid, cluster_uuid)
        if used:
            shown = "; ".join(used[:10]) + (" and more" if len(used) > 10 else "")
            raise ZError(OPERATION_ERROR, "primary storage in use",
                         f"primary storage {ps_uuid} holds volumes of VMs in cluster "
                         f"{cluster_uuid}: {shown}; destroy and expunge those VMs (or detach "
                         "their data volumes) first")


def flow_steps() -> Iterator[FlowStep]:
    yield FlowStep("refuse-detach-with-volumes", RefuseDetachWithVolumes())
    yield FlowStep("select-backup-storage", SelectBackupStorage())
    yield FlowStep("plan-volumes", PlanVolumes())
    yield FlowStep("allocate-primary-storage", AllocatePrimaryStorage())
    yield FlowStep("allocate-volumes", AllocateVolumes())
    yield FlowStep("instantiate-volumes", InstantiateVolumes())
    yield FlowStep("load-volumes", LoadVolumes())
    yield FlowStep("destroy-vm-volumes", DestroyVmVolumes())
    yield FlowStep("recover-vm-volumes", RecoverVmVolumes())
    yield FlowStep("expunge-vm-volumes", ExpungeVmVolumes())


def flow_insertions() -> Iterator[FlowInsertion]:
    yield FlowInsertion("primary-storage-detach", "refuse-detach-with-volumes",
                        before="release-primary-storage-on-cluster-hosts")
