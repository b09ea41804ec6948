"""Volume snapshots and templates made from root volumes.

Resources ``VolumeSnapshotVO`` (``VolumeSnapshotInventory``) and ``VolumeSnapshotTreeVO``
(``VolumeSnapshotTreeInventory``). APIs, as ZStack's: CreateVolumeSnapshot,
RevertVolumeFromSnapshot (the VM Stopped), DeleteVolumeSnapshot, QueryVolumeSnapshot,
QueryVolumeSnapshotTree, CreateRootVolumeTemplateFromRootVolume (the VM Stopped; a new
image on backup storage).

A snapshot takes its ``size`` on its volume's primary storage (reserved when taken, given
back when deleted). Snapshots of a volume form a tree: each new one's parent is the latest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from zcore import ApiMessage, InventoryExtension, ResourceType
from zcore.api import ApiContext, APIMessage, Inventory, Param, QueryMessage
from zcore.db import add_resource, delete_resource
from zcore.errors import INVALID_ARGUMENT, ZError
from zplugins.compute.public import (
    HOST_OPERATION_FAILED,
    check_vm_state,
    get_host,
    get_vm,
    vm_queue,
)
from zplugins.storage.backup import BackupStorageVO, BackupStorageZoneRefVO
from zplugins.storage.image_models import IMAGE, ImageBackupStorageRefVO, ImageVO
from zplugins.storage.primary_ops import release, reserve
from zplugins.storage.volume_models import VolumeSnapshotTreeVO, VolumeSnapshotVO
from zplugins.storage.volume_ops import (
    PS_ALLOCATION_FAILED,
    SNAPSHOT,
    SNAPSHOT_TREE,
    VOLUME,
    VOLUME_STATE_ERROR,
    get_volume,
    ps_driver,
    ps_info,
)

SNAPSHOT_INVENTORY = "org.zstack.header.storage.snapshot.VolumeSnapshotInventory"
TREE_INVENTORY = "org.zstack.header.storage.snapshot.VolumeSnapshotTreeInventory"
RESULT = {"inventory": "VolumeSnapshotInventory"}
DELETE_MODES = ("Permissive", "Enforcing")


def snapshot_inventory(row: VolumeSnapshotVO) -> dict[str, Any]:
    """The fields of ZStack's VolumeSnapshotInventory."""
    return {"uuid": row.uuid, "name": row.name, "description": row.description,
            "type": row.type, "volumeUuid": row.volumeUuid, "treeUuid": row.treeUuid,
            "parentUuid": row.parentUuid, "primaryStorageUuid": row.primaryStorageUuid,
            "primaryStorageInstallPath": row.primaryStorageInstallPath,
            "volumeType": row.volumeType, "format": row.format, "latest": row.latest,
            "size": row.size, "state": row.state, "status": row.status,
            "distance": row.distance, "groupUuid": row.groupUuid, "backupStorageRefs": [],
            "createDate": row.createDate, "lastOpDate": row.lastOpDate}


def tree_inventory(row: VolumeSnapshotTreeVO) -> dict[str, Any]:
    """The fields of ZStack's VolumeSnapshotTreeInventory (``tree`` comes from
    :func:`tree_leaves`)."""
    return {"uuid": row.uuid, "volumeUuid": row.volumeUuid, "current": row.current,
            "status": row.status, "tree": None, "createDate": row.createDate,
            "lastOpDate": row.lastOpDate}


def tree_leaves(session: Session, inventories: list[Any]) -> dict[str, dict[str, Any]]:
    """``tree`` of snapshot tree inventories: ZStack's SnapshotLeafInventory, the root
    snapshot with its ``children``, each leaf ``{"inventory", "parentUuid", "children"}``."""
    rows = session.scalars(select(VolumeSnapshotVO).where(
        VolumeSnapshotVO.treeUuid.in_([i["uuid"] for i in inventories]))
        .order_by(VolumeSnapshotVO.createDate, VolumeSnapshotVO.uuid))
    leaves: dict[str, dict[str, Any]] = {}
    trees: dict[str, list[VolumeSnapshotVO]] = {}
    for row in rows:
        leaves[row.uuid] = {"inventory": Inventory(SNAPSHOT_INVENTORY, snapshot_inventory(row)),
                            "parentUuid": row.parentUuid, "children": []}
        trees.setdefault(row.treeUuid or "", []).append(row)
    result: dict[str, dict[str, Any]] = {}
    for tree_uuid, members in trees.items():
        for row in members:
            parent = leaves.get(row.parentUuid or "")
            if parent is not None:
                parent["children"].append(leaves[row.uuid])
            elif tree_uuid not in result:
                result[tree_uuid] = {"tree": leaves[row.uuid]}
    return result


def _snapshot(session: Session, uuid: str) -> VolumeSnapshotVO:
    row = session.get(VolumeSnapshotVO, uuid, populate_existing=True)
    if row is None:
        raise ZError("SYS.1003", "resource not found", f"{SNAPSHOT} {uuid} does not exist")
    return row


async def _in_vm_queue(ctx: ApiContext, vm_uuid: str | None,
                       work: Callable[[], Awaitable[Any]]) -> Any:
    if vm_uuid is None:
        return await work()
    return await vm_queue(ctx.node, vm_uuid, work)


async def _host_for(ctx: ApiContext, vm_uuid: str | None, ps: Any,
                    volume_host: str | None = None) -> Any:
    if volume_host is not None:  # on a host's own disk: only that host reaches it
        host = await get_host(ctx.node, volume_host)
        if host is None or host.status != "Connected":
            raise ZError(HOST_OPERATION_FAILED, "host not connected",
                         f"the volume is on the local storage of host {volume_host}, which "
                         f"is {host.status if host else 'deleted'}")
        return host
    if vm_uuid is not None:
        vm = await get_vm(ctx.node, vm_uuid)
        for host_uuid in (vm.hostUuid, vm.lastHostUuid) if vm else ():
            host = await get_host(ctx.node, host_uuid) if host_uuid else None
            if host is not None and host.status == "Connected":
                return host
    return await ps_driver(ctx.node, ps).any_host(ctx.node, ps)


async def _check_vm(ctx: ApiContext, api: str, vm_uuid: str | None) -> None:
    if vm_uuid is None:
        return
    vm = await get_vm(ctx.node, vm_uuid)
    if vm is not None:
        check_vm_state(api, vm.state, vm.uuid)


class CreateVolumeSnapshot(APIMessage, method="POST", path="/volumes/{volumeUuid}/volume-snapshots",
                           resource_type=SNAPSHOT, result=RESULT):
    """Snapshot a Ready volume; its VM (if any) Running, Stopped or Paused."""

    volumeUuid = Param(str, required=True, resource_type=VOLUME)
    name = Param(str, required=True, max_length=255)
    description = Param(str, max_length=2048)
    resourceUuid = Param(str)
    tagUuids = Param(list)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        volume = await ctx.run(get_volume, self.volumeUuid)

        async def take() -> str:
            await _check_vm(ctx, self.api_name, volume.vmInstanceUuid)
            row = await ctx.run(get_volume, self.volumeUuid)
            if row.status != "Ready" or row.primaryStorageUuid is None or not row.installPath:
                raise ZError(VOLUME_STATE_ERROR, "volume not Ready",
                             f"{self.api_name}: volume '{row.name}' ({row.uuid}) is "
                             f"{row.status}; only a Ready volume can be snapshotted")
            ps = await ctx.run(ps_info, row.primaryStorageUuid)
            host = await _host_for(ctx, row.vmInstanceUuid, ps, row.hostUuid)
            snapshot_uuid = self.resourceUuid
            from zcore.db import new_uuid

            snapshot_uuid = snapshot_uuid or new_uuid()
            path, size = await ps_driver(ctx.node, ps).take_snapshot(
                ctx.node, ps, host, row.uuid, row.installPath, snapshot_uuid)

            def record(session: Session) -> str:
                vol = get_volume(session, self.volumeUuid)
                if size and not reserve(session, ps.uuid, size):
                    raise ZError(PS_ALLOCATION_FAILED, "no space for the snapshot",
                                 f"{self.api_name}: primary storage {ps.name} ({ps.uuid}) has "
                                 f"less than {size} bytes available for the snapshot of "
                                 f"volume {vol.uuid}; free some space")
                tree = session.scalar(select(VolumeSnapshotTreeVO).where(
                    VolumeSnapshotTreeVO.volumeUuid == vol.uuid,
                    VolumeSnapshotTreeVO.current.is_(True)))
                if tree is None:
                    tree = VolumeSnapshotTreeVO(volumeUuid=vol.uuid, current=True)
                    session.add(tree)
                    session.flush()
                parent = session.scalar(select(VolumeSnapshotVO).where(
                    VolumeSnapshotVO.treeUuid == tree.uuid, VolumeSnapshotVO.latest.is_(True)))
                if parent is not None:
                    parent.latest = False
                snap = VolumeSnapshotVO(
                    uuid=snapshot_uuid, name=self.name, description=self.description,
                    volumeUuid=vol.uuid, treeUuid=tree.uuid,
                    parentUuid=parent.uuid if parent else None,
                    primaryStorageUuid=ps.uuid, primaryStorageInstallPath=path,
                    volumeType=vol.type, format=vol.format, size=size, latest=True,
                    distance=(parent.distance + 1) if parent else 0, status="Ready")
                add_resource(session, snap, SNAPSHOT, owner_account_uuid=ctx.owner)
                session.flush()
                ctx.add_tags(session, snap.uuid, SNAPSHOT)
                return snap.uuid

            try:
                return await ctx.run(record)
            except BaseException:
                await ps_driver(ctx.node, ps).delete_snapshot(ctx.node, ps, host, path)
                raise

        uuid = await _in_vm_queue(ctx, volume.vmInstanceUuid, take)
        return {"inventory": ctx.inventory(SNAPSHOT, await ctx.run(_snapshot, uuid))}


class RevertVolumeFromSnapshot(APIMessage, method="PUT", path="/volume-snapshots/{uuid}/actions",
                               resource_type=SNAPSHOT, result={}):
    """Make a volume what it was at the snapshot; its VM must be Stopped."""

    uuid = Param(str, required=True, resource_type=SNAPSHOT)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        snap = await ctx.run(_snapshot, self.uuid)
        if snap.volumeUuid is None:
            raise ZError(INVALID_ARGUMENT, "snapshot has no volume",
                         f"{self.api_name}: snapshot {snap.uuid} belongs to no volume")
        volume = await ctx.run(get_volume, snap.volumeUuid)

        async def revert() -> None:
            await _check_vm(ctx, self.api_name, volume.vmInstanceUuid)
            row = await ctx.run(get_volume, volume.uuid)
            ps = await ctx.run(ps_info, row.primaryStorageUuid)
            host = await _host_for(ctx, row.vmInstanceUuid, ps, row.hostUuid)
            path = await ps_driver(ctx.node, ps).revert_snapshot(
                ctx.node, ps, host, row.installPath or "", snap.primaryStorageInstallPath or "")

            def record(session: Session) -> None:
                vol = get_volume(session, volume.uuid)
                vol.installPath = path
                session.execute(update(VolumeSnapshotVO).where(
                    VolumeSnapshotVO.treeUuid == snap.treeUuid).values(latest=False))
                _snapshot(session, snap.uuid).latest = True

            await ctx.run(record)

        await _in_vm_queue(ctx, volume.vmInstanceUuid, revert)
        return {}


class DeleteVolumeSnapshot(APIMessage, method="DELETE", path="/volume-snapshots/{uuid}",
                           resource_type=SNAPSHOT, result={}):
    """Delete a snapshot: its bits, its row; its space comes back. Its children follow
    their grandparent."""

    uuid = Param(str, required=True, resource_type=SNAPSHOT)
    deleteMode = Param(str, default="Permissive", valid_values=DELETE_MODES)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        snap = await ctx.run(_snapshot, self.uuid)
        if snap.primaryStorageUuid and snap.primaryStorageInstallPath:
            ps = await ctx.run(ps_info, snap.primaryStorageUuid)
            await ps_driver(ctx.node, ps).delete_snapshot(ctx.node, ps, None,
                                                          snap.primaryStorageInstallPath)

        def forget(session: Session) -> None:
            row = session.get(VolumeSnapshotVO, self.uuid)
            if row is None:
                return
            if row.primaryStorageUuid and row.size:
                release(session, row.primaryStorageUuid, row.size)
            session.execute(update(VolumeSnapshotVO).where(
                VolumeSnapshotVO.parentUuid == row.uuid).values(parentUuid=row.parentUuid))
            if row.latest and row.parentUuid:
                parent = session.get(VolumeSnapshotVO, row.parentUuid)
                if parent is not None:
                    parent.latest = True
            delete_resource(session, row)

        await ctx.run(forget)
        return {}


class QueryVolumeSnapshot(QueryMessage, path="/volume-snapshots", resource=SNAPSHOT):
    """Query volume snapshots (``volumeUuid=...``)."""


class QueryVolumeSnapshotTree(QueryMessage, path="/volume-snapshots/trees",
                              resource=SNAPSHOT_TREE):
    """Query snapshot trees (``volumeUuid=...``)."""


class CreateRootVolumeTemplateFromRootVolume(
        APIMessage, method="POST", path="/images/root-volume-templates/from/volumes/{rootVolumeUuid}",
        resource_type=IMAGE, result={"inventory": "ImageInventory"}):
    """A new RootVolumeTemplate image from a root volume (its VM Stopped), uploaded to
    ``backupStorageUuids`` (default: a Connected backup storage of the VM's zone)."""

    rootVolumeUuid = Param(str, required=True, resource_type=VOLUME)
    name = Param(str, required=True, max_length=255)
    description = Param(str, max_length=2048)
    guestOsType = Param(str, max_length=255)
    backupStorageUuids = Param(list)
    platform = Param(str, valid_values=("Linux", "Windows", "Other", "Paravirtualization",
                                        "WindowsVirtio"))
    system = Param(bool)
    architecture = Param(str)
    virtio = Param(bool)
    resourceUuid = Param(str)
    tagUuids = Param(list)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        volume = await ctx.run(get_volume, self.rootVolumeUuid)
        if volume.type != "Root":
            raise ZError(VOLUME_STATE_ERROR, "not a root volume",
                         f"{self.api_name}: volume {volume.uuid} is a {volume.type} volume")

        def backup_storage(session: Session, zone_uuid: str | None) -> list[tuple[str, str]]:
            query = select(BackupStorageVO.uuid, BackupStorageVO.url).where(
                BackupStorageVO.status == "Connected", BackupStorageVO.state == "Enabled")
            if self.backupStorageUuids:
                query = query.where(BackupStorageVO.uuid.in_(self.backupStorageUuids))
            elif zone_uuid is not None:
                query = query.join(BackupStorageZoneRefVO,
                                   BackupStorageZoneRefVO.backupStorageUuid ==
                                   BackupStorageVO.uuid).where(
                    BackupStorageZoneRefVO.zoneUuid == zone_uuid)
            return [(u, url) for u, url in session.execute(query.order_by(
                BackupStorageVO.availableCapacity.desc()).limit(
                    len(self.backupStorageUuids or ()) or 1))]

        async def create() -> str:
            from zcore.db import new_uuid

            await _check_vm(ctx, self.api_name, volume.vmInstanceUuid)
            vm = await get_vm(ctx.node, volume.vmInstanceUuid) if volume.vmInstanceUuid \
                else None
            targets = await ctx.run(backup_storage, vm.zoneUuid if vm else None)
            if not targets:
                raise ZError("BACKUP_STORAGE.1001", "no backup storage",
                             f"{self.api_name}: no Enabled, Connected backup storage to upload "
                             "the template to; give backupStorageUuids or attach one")
            row = await ctx.run(get_volume, volume.uuid)
            ps = await ctx.run(ps_info, row.primaryStorageUuid)
            host = await _host_for(ctx, row.vmInstanceUuid, ps, row.hostUuid)
            image_uuid = self.resourceUuid or new_uuid()
            uploaded = []
            for bs_uuid, bs_url in targets:
                path, size = await ps_driver(ctx.node, ps).create_template(
                    ctx.node, ps, host, row.installPath or "", image_uuid, bs_uuid, bs_url)
                uploaded.append((bs_uuid, path, size))

            def record(session: Session) -> str:
                source = session.get(ImageVO, row.rootImageUuid) if row.rootImageUuid else None
                size = max([s for _, _, s in uploaded] + [0]) or row.actualSize or 0
                image = ImageVO(uuid=image_uuid, name=self.name, description=self.description,
                                state="Enabled", status="Ready", size=row.size,
                                actualSize=size, url=f"volume://{row.uuid}",
                                mediaType="RootVolumeTemplate",
                                guestOsType=self.guestOsType or (source.guestOsType
                                                                 if source else None),
                                platform=self.platform or (source.platform if source else None),
                                format=row.format or "qcow2", system=bool(self.system),
                                architecture=self.architecture or (source.architecture
                                                                   if source else None),
                                virtio=True if self.virtio is None else self.virtio)
                add_resource(session, image, IMAGE, owner_account_uuid=ctx.owner)
                session.flush()
                for bs_uuid, path, _ in uploaded:
                    session.add(ImageBackupStorageRefVO(imageUuid=image.uuid,
                                                        backupStorageUuid=bs_uuid,
                                                        installPath=path, status="Ready"))
                    session.execute(update(BackupStorageVO).where(
                        BackupStorageVO.uuid == bs_uuid).values(
                            availableCapacity=BackupStorageVO.availableCapacity - size))
                ctx.add_tags(session, image.uuid, IMAGE)
                return image.uuid

            return await ctx.run(record)

        uuid = await _in_vm_queue(ctx, volume.vmInstanceUuid, create)

        def load(session: Session) -> ImageVO:
            image = session.get(ImageVO, uuid)
            assert image is not None
            return image

        return {"inventory": ctx.inventory(IMAGE, await ctx.run(load))}


APIS: tuple[type[APIMessage], ...] = (CreateVolumeSnapshot, RevertVolumeFromSnapshot,
                                      DeleteVolumeSnapshot, QueryVolumeSnapshot,
                                      QueryVolumeSnapshotTree,
                                      CreateRootVolumeTemplateFromRootVolume)


def resource_types() -> Iterator[ResourceType]:
    yield ResourceType(SNAPSHOT, model=VolumeSnapshotVO, inventory=SNAPSHOT_INVENTORY,
                       description="A snapshot of a volume", to_inventory=snapshot_inventory)
    yield ResourceType(SNAPSHOT_TREE, model=VolumeSnapshotTreeVO, inventory=TREE_INVENTORY,
                       description="A chain of snapshots of a volume",
                       owned_through="volumeUuid", to_inventory=tree_inventory)


def inventory_extensions() -> Iterator[InventoryExtension]:
    yield InventoryExtension(SNAPSHOT_TREE, "tree", tree_leaves)


def api_messages() -> Iterator[ApiMessage]:
    for message in APIS:
        yield ApiMessage(message)
