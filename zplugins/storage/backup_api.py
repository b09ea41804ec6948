"""The backup storage APIs every backend shares, as ZStack's.

Adding one is the backend's own API (``AddSftpBackupStorage`` in the ``sftpbackup`` plugin,
``AddSimulatorBackupStorage`` in ``simulator``), through
:func:`zplugins.storage.backup.add_backup_storage`. Everything here but the query is for
administrators, as in ZStack.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zcore.api import ApiContext, APIMessage, Param, QueryMessage
from zcore.db import delete_resource
from zcore.errors import DELETE_FAILED, INVALID_ARGUMENT, ZError
from zplugins.storage.backup import (
    BACKUP_STORAGE,
    BackupStorageVO,
    BackupStorageZoneRefVO,
    backup_storage_driver,
    backup_storage_info,
    get_backup_storage,
)

__all__ = [
    "APIS",
    "AttachBackupStorageToZone",
    "ChangeBackupStorageState",
    "DeleteBackupStorage",
    "DetachBackupStorageFromZone",
    "QueryBackupStorage",
    "ReconnectBackupStorage",
    "UpdateBackupStorage",
]

INVENTORY = {"inventory": "BackupStorageInventory"}
STATE_EVENTS = {"enable": "Enabled", "disable": "Disabled"}
DELETE_MODES = ("Permissive", "Enforcing")


def _ref(session: Session, bs_uuid: str, zone_uuid: str) -> BackupStorageZoneRefVO | None:
    return session.scalars(select(BackupStorageZoneRefVO).where(
        BackupStorageZoneRefVO.backupStorageUuid == bs_uuid,
        BackupStorageZoneRefVO.zoneUuid == zone_uuid)).first()


def _attached_twice(api: str, bs_uuid: str, zone_uuid: str) -> ZError:
    return ZError(INVALID_ARGUMENT, "invalid argument",
                  f"{api}: backup storage {bs_uuid} is already attached to zone {zone_uuid}")


class AttachBackupStorageToZone(APIMessage, method="POST",
                                path="/zones/{zoneUuid}/backup-storage/{backupStorageUuid}",
                                resource_type=BACKUP_STORAGE, result=INVENTORY,
                                admin_only=True):
    """Let a zone use a backup storage (its VMs' images come from it). Attaching twice is
    refused (``SYS.1007``); a backup storage may serve several zones."""

    zoneUuid = Param(str, required=True, resource_type="ZoneVO")
    backupStorageUuid = Param(str, required=True, resource_type=BACKUP_STORAGE)

    async def validate(self, ctx: ApiContext) -> None:
        if await ctx.run(_ref, self.backupStorageUuid, self.zoneUuid) is not None:
            raise _attached_twice(self.api_name, self.backupStorageUuid, self.zoneUuid)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def attach(session: Session) -> None:
            get_backup_storage(session, self.backupStorageUuid)
            session.add(BackupStorageZoneRefVO(backupStorageUuid=self.backupStorageUuid,
                                               zoneUuid=self.zoneUuid))
            session.flush()

        try:
            await ctx.run(attach)
        except IntegrityError:
            # Attached meanwhile by another call, or the zone went.
            if await ctx.run(_ref, self.backupStorageUuid, self.zoneUuid) is not None:
                raise _attached_twice(self.api_name, self.backupStorageUuid,
                                      self.zoneUuid) from None
            raise
        row = await ctx.run(get_backup_storage, self.backupStorageUuid)
        return {"inventory": ctx.inventory(BACKUP_STORAGE, row)}


class DetachBackupStorageFromZone(APIMessage, method="DELETE",
                                  path="/zones/{zoneUuid}/backup-storage/{backupStorageUuid}",
                                  resource_type=BACKUP_STORAGE, result=INVENTORY,
                                  admin_only=True):
    """Stop a zone using a backup storage; ``SYS.1007`` when it is not attached there."""

    backupStorageUuid = Param(str, required=True, resource_type=BACKUP_STORAGE)
    zoneUuid = Param(str, required=True, resource_type="ZoneVO")

    async def validate(self, ctx: ApiContext) -> None:
        if await ctx.run(_ref, self.backupStorageUuid, self.zoneUuid) is None:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"{self.api_name}: backup storage {self.backupStorageUuid} is not "
                         f"attached to zone {self.zoneUuid}")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def detach(session: Session) -> BackupStorageVO:
            ref = _ref(session, self.backupStorageUuid, self.zoneUuid)
            if ref is not None:
                session.delete(ref)
                session.flush()
            return get_backup_storage(session, self.backupStorageUuid)

        await ctx.run(detach)
        row = await ctx.run(get_backup_storage, self.backupStorageUuid)
        return {"inventory": ctx.inventory(BACKUP_STORAGE, row)}


class QueryBackupStorage(QueryMessage, path="/backup-storage", resource=BACKUP_STORAGE):
    """Query backup storage; ``zoneRef.zone.<field>`` and ``imageRef.image.<field>`` reach
    the zones it is attached to and the images it holds."""


class UpdateBackupStorage(APIMessage, method="PUT", path="/backup-storage/{uuid}/actions",
                          resource_type=BACKUP_STORAGE, result=INVENTORY, admin_only=True):
    """Change a backup storage's name or description; only the parameters given."""

    uuid = Param(str, required=True, resource_type=BACKUP_STORAGE)
    name = Param(str, max_length=255)
    description = Param(str, max_length=2048)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> None:
            row = get_backup_storage(session, self.uuid)
            if self.name is not None:
                row.name = self.name
            if self.description is not None:
                row.description = self.description

        await ctx.run(change)
        row = await ctx.run(get_backup_storage, self.uuid)
        return {"inventory": ctx.inventory(BACKUP_STORAGE, row)}


class ChangeBackupStorageState(APIMessage, method="PUT", path="/backup-storage/{uuid}/actions",
                               resource_type=BACKUP_STORAGE, result=INVENTORY,
                               admin_only=True):
    """``enable`` or ``disable``: a disabled backup storage takes no new images."""

    uuid = Param(str, required=True, resource_type=BACKUP_STORAGE)
    stateEvent = Param(str, required=True, valid_values=tuple(STATE_EVENTS))

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> None:
            get_backup_storage(session, self.uuid).state = STATE_EVENTS[self.stateEvent]

        await ctx.run(change)
        row = await ctx.run(get_backup_storage, self.uuid)
        return {"inventory": ctx.inventory(BACKUP_STORAGE, row)}


class ReconnectBackupStorage(APIMessage, method="PUT", path="/backup-storage/{uuid}/actions",
                             resource_type=BACKUP_STORAGE, result=INVENTORY, admin_only=True):
    """Connect again through the driver and refresh the capacity it reports. On failure the
    backup storage is ``Disconnected`` and the error names why."""

    uuid = Param(str, required=True, resource_type=BACKUP_STORAGE)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        row = await ctx.run(get_backup_storage, self.uuid)
        driver = backup_storage_driver(ctx.node, row.type)

        def mark(session: Session, status: str, total: int | None, available: int | None
                 ) -> None:
            found = get_backup_storage(session, self.uuid)
            found.status = status
            if total is not None and available is not None:
                # What images reserved but the backend does not see yet stays taken.
                found.totalCapacity = total
                found.availableCapacity = min(available, total)

        await ctx.run(mark, "Connecting", None, None)
        try:
            capacity = await driver.connect(ctx.node, backup_storage_info(row))
        except BaseException:
            await ctx.run(mark, "Disconnected", None, None)
            raise
        await ctx.run(mark, "Connected", capacity.total, capacity.available)
        row = await ctx.run(get_backup_storage, self.uuid)
        return {"inventory": ctx.inventory(BACKUP_STORAGE, row)}


def _delete_rows(session: Session, uuid: str) -> None:
    row = session.get(BackupStorageVO, uuid)
    if row is None:
        return
    try:
        delete_resource(session, row)  # its zone attachments go with it (ON DELETE CASCADE)
    except IntegrityError as exc:
        raise ZError(DELETE_FAILED, f"cannot delete {BACKUP_STORAGE} {uuid}",
                     "an image was added to it meanwhile; try again") from exc


class DeleteBackupStorage(APIMessage, method="DELETE", path="/backup-storage/{uuid}",
                          resource_type=BACKUP_STORAGE, result={}, admin_only=True):
    """Delete a backup storage: it is detached from its zones and, through the cascade
    plugin, its copies of images are removed (an image with no copy left goes). Without the
    cascade plugin a backup storage that still holds images is not deleted (``SYS.1004``)."""

    uuid = Param(str, required=True, resource_type=BACKUP_STORAGE)
    deleteMode = Param(str, default="Permissive", valid_values=DELETE_MODES)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await ctx.delete(BACKUP_STORAGE, self.uuid, self.deleteMode, _delete_rows)
        return {}


APIS: tuple[type[APIMessage], ...] = (
    AttachBackupStorageToZone, DetachBackupStorageFromZone, QueryBackupStorage,
    UpdateBackupStorage, ChangeBackupStorageState, ReconnectBackupStorage, DeleteBackupStorage)
