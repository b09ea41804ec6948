"""Volumes: their resource type, the data volume APIs, and ``allVolumes`` of VMs.

Resource ``VolumeVO`` (``org.zstack.header.volume.VolumeInventory``). APIs, as ZStack's:
QueryVolume, CreateDataVolume, AttachDataVolumeToVm, DetachDataVolumeFromVm,
DeleteDataVolume, RecoverDataVolume, ExpungeDataVolume.

A data volume created without ``primaryStorageUuid`` is ``NotInstantiated``: it holds no
bytes and no capacity until it is attached, when it is created on the attached primary
storage of the VM's cluster with the most available capacity. Deleting follows
``volume.deletionPolicy`` as VMs follow ``vm.deletionPolicy``: ``Direct`` expunges at once,
``Delay`` (default) and ``Never`` mark it ``Deleted`` (detached, its bytes and capacity kept)
until RecoverDataVolume or ExpungeDataVolume. Operations that touch a VM run in its queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from zcore import (
    ApiMessage,
    CascadeEdge,
    GlobalConfigOption,
    InventoryExtension,
    Migrations,
    ResourceType,
)
from zcore.api import ApiContext, APIMessage, Inventory, Param, QueryMessage
from zcore.db import add_resource, table_of, utcnow
from zcore.errors import INVALID_ARGUMENT, OPERATION_ERROR, ZError
from zplugins.compute.public import (
    check_vm_state,
    get_host,
    get_vm,
    hypervisor_of,
    on_host,
    vm_queue,
)
from zplugins.storage.disk_offerings import DiskOfferingVO
from zplugins.storage.primary_ops import release, reserve
from zplugins.storage.volume_models import VolumeVO
from zplugins.storage.volume_ops import (
    PS_ALLOCATION_FAILED,
    PS_USABLE,
    VOLUME,
    VOLUME_STATE_ERROR,
    bits_of,
    delete_bits,
    deletion_policy,
    forget_volume,
    get_volume,
    leave_bits,
    ps_driver,
    ps_info,
    reserve_on_cluster,
    volume_to,
)

if TYPE_CHECKING:
    from zcore.node import Node
    from zplugins.compute.public import VmInfo

_HERE = Path(__file__).resolve().parent
VOLUME_INVENTORY = "org.zstack.header.volume.VolumeInventory"
INVENTORY = {"inventory": "VolumeInventory"}
log = logging.getLogger("zplugins.storage.volumes")

CATEGORY = "volume"
EXPUNGE_PERIOD = "expungePeriod"
EXPUNGE_INTERVAL = "expungeInterval"
DELETION_POLICIES = ("Direct", "Delay", "Never")
DELETE_MODES = ("Permissive", "Enforcing")
MAX_LONG = 2**63 - 1


def volume_inventory(row: Any) -> dict[str, Any]:
    """The fields of ZStack's VolumeInventory."""
    return {"uuid": row.uuid, "name": row.name, "description": row.description,
            "primaryStorageUuid": row.primaryStorageUuid,
            "vmInstanceUuid": row.vmInstanceUuid, "diskOfferingUuid": row.diskOfferingUuid,
            "rootImageUuid": row.rootImageUuid, "installPath": row.installPath,
            "type": row.type, "format": row.format, "size": row.size,
            "actualSize": row.actualSize, "deviceId": row.deviceId, "state": row.state,
            "status": row.status, "isShareable": row.isShareable,
            "lastVmInstanceUuid": row.lastVmInstanceUuid,
            "lastAttachDate": row.lastAttachDate, "lastDetachDate": row.lastDetachDate,
            "volumeQos": row.volumeQos, "protocol": row.protocol,
            "createDate": row.createDate, "lastOpDate": row.lastOpDate}


_VOLUMES = table_of(VolumeVO)
_VOLUMES_OF_VMS = select(_VOLUMES).where(_VOLUMES.c.vmInstanceUuid.in_(
    bindparam("uuids", expanding=True)))


def all_volumes(session: Session, inventories: list[Any]) -> dict[str, dict[str, Any]]:
    """``allVolumes`` of VM inventories: their volumes, root first."""
    uuids = [i["uuid"] for i in inventories]
    found: dict[str, list[Any]] = {}
    # Plain rows: cheaper than entities, and this runs for every VM inventory.
    for row in session.connection().execute(_VOLUMES_OF_VMS, {"uuids": uuids}):
        found.setdefault(row.vmInstanceUuid or "", []).append(row)
    result = {}
    for vm_uuid, rows in found.items():
        rows.sort(key=lambda r: (r.type != "Root", r.deviceId or 0, r.uuid))
        result[vm_uuid] = {"allVolumes": [Inventory(VOLUME_INVENTORY, volume_inventory(r))
                                          for r in rows]}
    return result


# --------------------------------------------------------------------------- helpers


def _refuse(api: str, row: VolumeVO, why: str) -> ZError:
    return ZError(VOLUME_STATE_ERROR, "operation not allowed on the volume",
                  f"{api}: volume '{row.name}' ({row.uuid}) is a {row.type} volume, "
                  f"{row.status}{', attached to VM ' + row.vmInstanceUuid if row.vmInstanceUuid else ''}"
                  f"; {why}")


def _data_volume(session: Session, api: str, uuid: str) -> VolumeVO:
    row = get_volume(session, uuid)
    if row.type != "Data":
        raise _refuse(api, row, "only data volumes can be")
    return row


async def _vm(ctx: ApiContext, uuid: str) -> VmInfo:
    vm = await get_vm(ctx.node, uuid)
    if vm is None:
        raise ZError("SYS.1003", "resource not found",
                     f"VmInstanceVO {uuid} does not exist (any more)")
    return vm


async def _instantiate(node: Node, uuid: str, reserve_fn: Any, host_uuid: str | None) -> None:
    """Reserve capacity for a ``NotInstantiated`` volume (``reserve_fn(session, row)`` gives
    the storage), create it there and mark it ``Ready``; nothing left behind on failure."""
    def claim(session: Session) -> tuple[Any, int]:
        row = get_volume(session, uuid)
        ps_uuid = reserve_fn(session, row)
        row.primaryStorageUuid = ps_uuid
        row.status = "Creating"
        return ps_info(session, ps_uuid), row.size

    def undo(session: Session, ps_uuid: str, size: int) -> None:
        release(session, ps_uuid, size)
        row = session.get(VolumeVO, uuid)
        if row is not None:
            row.primaryStorageUuid = None
            row.status = "NotInstantiated"

    def ready(session: Session, path: str, host_uuid: str | None) -> None:
        row = get_volume(session, uuid)
        row.installPath = path
        row.status = "Ready"
        row.actualSize = 0
        row.hostUuid = host_uuid

    ps, size = await node.db.run(claim)
    try:
        driver = ps_driver(node, ps)
        host = await get_host(node, host_uuid) if host_uuid else None
        if host is None or host.status != "Connected":
            host = await driver.any_host(node, ps)
        path = await driver.create_empty_volume(node, ps, host, uuid, size)
    except BaseException:
        await node.db.run(undo, ps.uuid, size)
        raise
    await node.db.run(ready, path, host.uuid if driver.host_local else None)


def _reserve_given(ps_uuid: str, api: str) -> Any:
    def pick(session: Session, row: VolumeVO) -> str:
        ps = ps_info(session, ps_uuid)
        if (ps.state, ps.status) != PS_USABLE:
            raise ZError(PS_ALLOCATION_FAILED, "primary storage not usable",
                         f"{api}: primary storage {ps.name} ({ps.uuid}) is "
                         f"{ps.state}/{ps.status}; it must be Enabled and Connected")
        if not reserve(session, ps_uuid, row.size):
            raise ZError(PS_ALLOCATION_FAILED, "no primary storage fits",
                         f"{api}: primary storage {ps.name} ({ps.uuid}) has less than "
                         f"{row.size} bytes available for volume {row.uuid}; free some space "
                         "or pick another primary storage")
        return ps_uuid
    return pick


def _reserve_on_cluster(cluster_uuid: str) -> Any:
    def pick(session: Session, row: VolumeVO) -> str:
        return reserve_on_cluster(session, cluster_uuid, row.size,
                                  what=f"data volume '{row.name}' ({row.uuid})")
    return pick


async def expunge_volume(node: Node, uuid: str, host_uuid: str | None = None) -> None:
    """Delete a volume's bits (and its snapshots'), give its capacity back, drop its rows."""
    bits = await node.db.run(bits_of, uuid, host_uuid)
    left = await delete_bits(node, bits)

    def forget(session: Session) -> None:
        forget_volume(session, uuid)
        leave_bits(session, node, uuid, bits, left)

    await node.db.run(forget)


# --------------------------------------------------------------------------- APIs


class QueryVolume(QueryMessage, path="/volumes", resource=VOLUME):
    """Query volumes (``vmInstanceUuid=... type=Data status=Ready``)."""


class CreateDataVolume(APIMessage, method="POST", path="/volumes/data", resource_type=VOLUME,
                       result=INVENTORY):
    """Create a data volume of a disk offering's size or ``diskSize`` bytes:
    ``NotInstantiated`` until attached, or created at once on ``primaryStorageUuid``."""

    name = Param(str, required=True, max_length=255)
    description = Param(str, max_length=2048)
    diskOfferingUuid = Param(str, resource_type="DiskOfferingVO")
    diskSize = Param(int, number_range=(1, MAX_LONG), api_type="Long")
    primaryStorageUuid = Param(str, resource_type="PrimaryStorageVO")
    resourceUuid = Param(str)
    tagUuids = Param(list, description="Not supported yet: give systemTags or userTags")

    async def validate(self, ctx: ApiContext) -> None:
        if (self.diskOfferingUuid is None) == (self.diskSize is None):
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"{self.api_name}: give exactly one of diskOfferingUuid and diskSize "
                         "(bytes)")
        if self.tagUuids:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'tagUuids' of {self.api_name}: not supported yet; give "
                         "the tags as systemTags or userTags")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def insert(session: Session) -> str:
            size = self.diskSize
            if self.diskOfferingUuid is not None:
                offering = session.get(DiskOfferingVO, self.diskOfferingUuid)
                if offering is None or offering.state != "Enabled":
                    raise ZError(INVALID_ARGUMENT, "invalid argument",
                                 f"{self.api_name}: disk offering {self.diskOfferingUuid} is "
                                 "not Enabled (or gone); enable it or give another")
                size = offering.diskSize
            row = VolumeVO(name=self.name, description=self.description, type="Data",
                           size=size, diskOfferingUuid=self.diskOfferingUuid, format="qcow2",
                           status="NotInstantiated", state="Enabled", actualSize=0)
            if self.resourceUuid is not None:
                row.uuid = self.resourceUuid
            add_resource(session, row, VOLUME, owner_account_uuid=ctx.owner)
            session.flush()
            ctx.add_tags(session, row.uuid, VOLUME)
            return row.uuid

        uuid = await ctx.run(insert)
        if self.primaryStorageUuid is not None:
            try:
                await _instantiate(ctx.node, uuid,
                                   _reserve_given(self.primaryStorageUuid, self.api_name), None)
            except BaseException:
                await ctx.run(forget_volume, uuid)
                raise
        return {"inventory": ctx.inventory(VOLUME, await ctx.run(get_volume, uuid))}


class AttachDataVolumeToVm(APIMessage, method="POST",
                           path="/volumes/{volumeUuid}/vm-instances/{vmInstanceUuid}",
                           resource_type=VOLUME, result=INVENTORY):
    """Attach a data volume to a Running, Stopped or Paused VM, creating it first on a
    primary storage of the VM's cluster if it is ``NotInstantiated``."""

    volumeUuid = Param(str, required=True, resource_type=VOLUME)
    vmInstanceUuid = Param(str, required=True, resource_type="VmInstanceVO")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        node = ctx.node

        def check(session: Session) -> str:
            row = _data_volume(session, self.api_name, self.volumeUuid)
            if row.vmInstanceUuid is not None:
                raise _refuse(self.api_name, row, "detach it first")
            if row.status not in ("Ready", "NotInstantiated"):
                raise _refuse(self.api_name, row, "it must be Ready or NotInstantiated")
            return row.status

        def plug(session: Session, vm: VmInfo) -> Any:
            row = get_volume(session, self.volumeUuid)
            if row.vmInstanceUuid is not None:
                raise _refuse(self.api_name, row, "detach it first")
            vm_host = vm.hostUuid or vm.lastHostUuid
            if row.hostUuid is not None and vm_host is not None and row.hostUuid != vm_host:
                raise _refuse(self.api_name, row,
                              f"it is on the local storage of host {row.hostUuid} and VM "
                              f"{vm.uuid} is on host {vm_host}")
            if vm.clusterUuid is not None and row.primaryStorageUuid is not None:
                from zplugins.storage.primary_models import PrimaryStorageClusterRefVO

                if session.scalar(select(PrimaryStorageClusterRefVO.id).where(
                        PrimaryStorageClusterRefVO.primaryStorageUuid == row.primaryStorageUuid,
                        PrimaryStorageClusterRefVO.clusterUuid == vm.clusterUuid)) is None:
                    raise _refuse(self.api_name, row,
                                  f"its primary storage {row.primaryStorageUuid} is not "
                                  f"attached to cluster {vm.clusterUuid} of VM {vm.uuid}")
            used = session.scalar(select(func.max(VolumeVO.deviceId)).where(
                VolumeVO.vmInstanceUuid == vm.uuid))
            row.vmInstanceUuid = vm.uuid
            row.deviceId = (used or 0) + 1
            row.lastAttachDate = utcnow()
            row.lastVmInstanceUuid = vm.uuid
            session.flush()
            return volume_to(row, ps_info(session, row.primaryStorageUuid).type
                             if row.primaryStorageUuid else None)

        def unplug(session: Session) -> None:
            row = session.get(VolumeVO, self.volumeUuid)
            if row is not None:
                row.vmInstanceUuid = None
                row.deviceId = None

        async def attach() -> None:
            vm = await _vm(ctx, self.vmInstanceUuid)
            check_vm_state(self.api_name, vm.state, vm.uuid)
            status = await ctx.run(check)
            if status == "NotInstantiated":
                if vm.clusterUuid is None:
                    raise ZError(VOLUME_STATE_ERROR, "VM has no cluster",
                                 f"{self.api_name}: VM {vm.uuid} has no cluster to create "
                                 f"volume {self.volumeUuid} in; start it once first")
                await _instantiate(node, self.volumeUuid, _reserve_on_cluster(vm.clusterUuid),
                                   vm.hostUuid or vm.lastHostUuid)
            volume = await ctx.run(plug, vm)
            if vm.state in ("Running", "Paused") and vm.hostUuid and vm.hypervisorType:
                host = await get_host(node, vm.hostUuid)
                if host is not None:
                    driver = hypervisor_of(node, vm.hypervisorType)
                    try:
                        await on_host(node, host.uuid, lambda: driver.attach_volume(
                            node, host, vm.uuid, volume))
                    except BaseException:
                        await ctx.run(unplug)
                        raise

        await vm_queue(node, self.vmInstanceUuid, attach)
        return {"inventory": ctx.inventory(VOLUME, await ctx.run(get_volume, self.volumeUuid))}


async def detach_volume(ctx: ApiContext, api: str, uuid: str) -> None:
    """Unplug a data volume from its VM (on the hypervisor if it runs), in the VM's queue."""
    node = ctx.node

    def read(session: Session) -> tuple[str | None, Any]:
        row = _data_volume(session, api, uuid)
        ps_type = ps_info(session, row.primaryStorageUuid).type \
            if row.primaryStorageUuid else None
        return row.vmInstanceUuid, volume_to(row, ps_type)

    vm_uuid, _ = await ctx.run(read)
    if vm_uuid is None:
        return

    def unplug(session: Session) -> None:
        row = get_volume(session, uuid)
        row.vmInstanceUuid = None
        row.deviceId = None
        row.lastVmInstanceUuid = vm_uuid
        row.lastDetachDate = utcnow()

    async def detach() -> None:
        current, volume = await ctx.run(read)
        if current != vm_uuid:
            return
        vm = await get_vm(node, vm_uuid)
        if vm is not None:
            check_vm_state("DetachDataVolumeFromVm", vm.state, vm.uuid)
            if vm.state in ("Running", "Paused") and vm.hostUuid and vm.hypervisorType:
                host = await get_host(node, vm.hostUuid)
                if host is not None:
                    driver = hypervisor_of(node, vm.hypervisorType)
                    await on_host(node, host.uuid, lambda: driver.detach_volume(
                        node, host, vm_uuid, volume))
        await ctx.run(unplug)

    await vm_queue(node, vm_uuid, detach)


class DetachDataVolumeFromVm(APIMessage, method="DELETE", path="/volumes/{uuid}/vm-instances",
                             resource_type=VOLUME, result=INVENTORY):
    """Detach a data volume from its VM (Running, Stopped or Paused)."""

    uuid = Param(str, required=True, resource_type=VOLUME)
    vmUuid = Param(str, description="The VM it is attached to (checked when given)")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        row = await ctx.run(_data_volume, self.api_name, self.uuid)
        if row.vmInstanceUuid is None or (self.vmUuid and row.vmInstanceUuid != self.vmUuid):
            raise _refuse(self.api_name, row, "it is not attached to "
                          + (f"VM {self.vmUuid}" if self.vmUuid else "a VM"))
        await detach_volume(ctx, self.api_name, self.uuid)
        return {"inventory": ctx.inventory(VOLUME, await ctx.run(get_volume, self.uuid))}


class DeleteDataVolume(APIMessage, method="DELETE", path="/volumes/{uuid}",
                       resource_type=VOLUME, result={}):
    """Delete a data volume (detaching it first) as ``volume.deletionPolicy`` says:
    ``Direct`` expunges at once; ``Delay`` and ``Never`` mark it ``Deleted``."""

    uuid = Param(str, required=True, resource_type=VOLUME)
    deleteMode = Param(str, default="Permissive", valid_values=DELETE_MODES)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        row = await ctx.run(_data_volume, self.api_name, self.uuid)
        if row.status == "Deleted":
            return {}
        await detach_volume(ctx, self.api_name, self.uuid)
        if deletion_policy(ctx.node, CATEGORY) == "Direct" or row.status == "NotInstantiated":
            await expunge_volume(ctx.node, self.uuid)
            return {}

        def mark(session: Session) -> None:
            row = get_volume(session, self.uuid)
            row.status, row.lastOpDate = "Deleted", utcnow()

        await ctx.run(mark)
        return {}


class RecoverDataVolume(APIMessage, method="PUT", path="/volumes/{uuid}/actions",
                        resource_type=VOLUME, result=INVENTORY):
    """Bring back a ``Deleted`` data volume (``Ready``, detached)."""

    uuid = Param(str, required=True, resource_type=VOLUME)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def recover(session: Session) -> VolumeVO:
            row = _data_volume(session, self.api_name, self.uuid)
            if row.status != "Deleted":
                raise _refuse(self.api_name, row, "only a Deleted volume can be recovered")
            row.status = "Ready"
            return row

        return {"inventory": ctx.inventory(VOLUME, await ctx.run(recover))}


class ExpungeDataVolume(APIMessage, method="PUT", path="/volumes/{uuid}/actions",
                        resource_type=VOLUME, result={}):
    """Remove a ``Deleted`` data volume's bits and rows; its capacity comes back."""

    uuid = Param(str, required=True, resource_type=VOLUME)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        row = await ctx.run(_data_volume, self.api_name, self.uuid)
        if row.status != "Deleted":
            raise _refuse(self.api_name, row, "delete it first (DeleteDataVolume)")
        await expunge_volume(ctx.node, self.uuid)
        return {}


APIS: tuple[type[APIMessage], ...] = (QueryVolume, CreateDataVolume, AttachDataVolumeToVm,
                                      DetachDataVolumeFromVm, DeleteDataVolume,
                                      RecoverDataVolume, ExpungeDataVolume)


# --------------------------------------------------------------------------- hooks


async def _refuse_volume_delete(node: Node, caller: Any, uuid: str,
                                deleting: frozenset[str]) -> None:
    def read(session: Session) -> tuple[str, str | None] | None:
        row = session.get(VolumeVO, uuid)
        return (row.name, row.vmInstanceUuid) if row is not None else None

    found = await node.db.run(read)
    if found is not None and found[1] is not None and found[1] not in deleting:
        raise ZError(OPERATION_ERROR, "volume in use by a VM",
                     f"volume '{found[0]}' ({uuid}) is attached to VM {found[1]}; detach it "
                     "(or destroy and expunge the VM) first")


async def _delete_volume(node: Node, caller: Any, uuid: str, mode: str) -> None:
    """How the cascade deletes a volume (its primary storage goes): bits and rows."""
    await expunge_volume(node, uuid)


def resource_types() -> Iterator[ResourceType]:
    yield ResourceType(VOLUME, model=VolumeVO, inventory=VOLUME_INVENTORY,
                       description="A root or data volume of a VM",
                       to_inventory=volume_inventory, check_delete=_refuse_volume_delete,
                       delete=_delete_volume, hidden=("hostUuid",))


def cascade_edges() -> Iterator[CascadeEdge]:
    yield CascadeEdge(VOLUME, "PrimaryStorageVO", field="primaryStorageUuid")


def inventory_extensions() -> Iterator[InventoryExtension]:
    yield InventoryExtension("VmInstanceVO", "allVolumes", all_volumes,
                             defaults=(("allVolumes", ()),))


def global_configs() -> Iterator[GlobalConfigOption]:
    yield GlobalConfigOption(
        CATEGORY, "deletionPolicy", str, "Delay",
        "What DeleteDataVolume does: Direct expunges at once; Delay keeps the volume Deleted "
        "and recoverable for volume.expungePeriod seconds; Never keeps it until "
        "ExpungeDataVolume", choices=DELETION_POLICIES)
    yield GlobalConfigOption(CATEGORY, EXPUNGE_PERIOD, int, 86400,
                             "Seconds a deleted data volume stays recoverable (policy Delay)",
                             min=1, max=2**31 - 1)
    yield GlobalConfigOption(CATEGORY, EXPUNGE_INTERVAL, int, 60,
                             "Seconds between two runs of the task that expunges old deleted "
                             "data volumes", min=1, max=86400)


def _old_deleted(session: Session, period: int) -> list[str]:
    before = utcnow() - timedelta(seconds=period)
    return list(session.scalars(select(VolumeVO.uuid).where(
        VolumeVO.status == "Deleted", VolumeVO.type == "Data", VolumeVO.lastOpDate < before)))


async def expunge_old_volumes(node: Node) -> list[str]:
    """Expunge the data volumes ``Deleted`` longer than ``volume.expungePeriod`` (policy
    ``Delay`` only); the uuids expunged. A failure is logged and the volume stays."""
    if deletion_policy(node, CATEGORY) != "Delay":
        return []
    period = int(node.global_config.get(CATEGORY, EXPUNGE_PERIOD))
    done = []
    for uuid in await node.db.run(_old_deleted, period):
        def still_deleted(session: Session, uuid: str = uuid) -> bool:
            row = session.get(VolumeVO, uuid)
            return row is not None and row.status == "Deleted"  # not recovered meanwhile

        try:
            if await node.db.run(still_deleted):
                await expunge_volume(node, uuid)
                done.append(uuid)
        except ZError as exc:
            log.warning("expunging deleted data volume %s failed; it stays Deleted: %s",
                        uuid, exc)
    if done:
        log.info("expunged %d data volume(s) deleted more than %d s ago", len(done), period)
    return done


async def _expunge_loop(node: Node) -> None:
    while True:
        await asyncio.sleep(float(node.global_config.get(CATEGORY, EXPUNGE_INTERVAL)))
        try:
            await expunge_old_volumes(node)
        except Exception:
            log.exception("the data volume expunge task failed")


def node_starting(node: Node) -> None:
    node.spawn(_expunge_loop(node), name=f"volume-expunge-{node.uuid}")


def db_migrations() -> Iterator[Migrations]:
    yield Migrations("volume", _HERE / "volume_migrations")


def api_messages() -> Iterator[ApiMessage]:
    for message in APIS:
        yield ApiMessage(message)
