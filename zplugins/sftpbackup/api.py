"""AddSftpBackupStorage and UpdateSftpBackupStorage, as ZStack's."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zcore.api import ApiContext, APIMessage, Param
from zcore.errors import INVALID_ARGUMENT, ZError
from zplugins.sftpbackup.driver import SftpBackupStorage
from zplugins.sftpbackup.models import SftpBackupStorageVO
from zplugins.storage.backup import (
    BACKUP_STORAGE,
    BackupStorageSpec,
    BackupStorageVO,
    add_backup_storage,
    check_resource_uuid,
    get_backup_storage,
)

__all__ = ["APIS", "AddSftpBackupStorage", "UpdateSftpBackupStorage"]

INVENTORY = {"inventory": "BackupStorageInventory"}
TYPE = SftpBackupStorage.type


def _same_place(session: Session, hostname: str, url: str, other_than: str | None = None
                ) -> BackupStorageVO | None:
    query = (select(BackupStorageVO)
             .join(SftpBackupStorageVO, SftpBackupStorageVO.uuid == BackupStorageVO.uuid)
             .where(SftpBackupStorageVO.hostname == hostname, BackupStorageVO.url == url))
    if other_than is not None:
        query = query.where(BackupStorageVO.uuid != other_than)
    return session.scalars(query).first()


def _taken(api: str, hostname: str, url: str, row: BackupStorageVO) -> ZError:
    return ZError(INVALID_ARGUMENT, "invalid argument",
                  f"{api}: directory {url} on host {hostname} is already backup storage "
                  f"'{row.name}' ({row.uuid})")


class AddSftpBackupStorage(APIMessage, method="POST", path="/backup-storage/sftp",
                           resource_type=BACKUP_STORAGE, result=INVENTORY, admin_only=True):
    """Add a directory on a host as backup storage; it is created if missing. For now the
    directory must be on the management node's machine (``url``, an absolute path)."""

    hostname = Param(str, required=True, max_length=255, non_empty=True)
    username = Param(str, required=True, max_length=255)
    password = Param(str, required=True, max_length=255)
    sshPort = Param(int, default=22, number_range=(1, 65535), api_type="int")
    url = Param(str, required=True, max_length=2048, non_empty=True,
                description="The absolute path of the directory that holds the images")
    name = Param(str, required=True, max_length=255)
    description = Param(str, max_length=2048)
    type = Param(str, valid_values=(TYPE,))
    importImages = Param(bool, default=False)
    resourceUuid = Param(str)
    tagUuids = Param(list, description="Not supported yet: give systemTags or userTags")

    def directory(self) -> str:
        return os.path.normpath(self.url.strip())

    async def validate(self, ctx: ApiContext) -> None:
        api = self.api_name
        if not os.path.isabs(self.url.strip()):
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'url' of {api}: {self.url!r} is not an absolute path; "
                         "give the directory that holds the images, e.g. /zstack_bs")
        if self.importImages:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'importImages' of {api}: importing the images already "
                         "in the directory is not supported yet")
        if self.tagUuids:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'tagUuids' of {api}: attaching existing tags by uuid is "
                         "not supported yet; give systemTags or userTags instead")
        check_resource_uuid(api, self.resourceUuid)
        found = await ctx.run(_same_place, self.hostname.strip(), self.directory())
        if found is not None:
            raise _taken(api, self.hostname.strip(), self.directory(), found)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        spec = BackupStorageSpec(self.name, self.directory(), TYPE, self.description,
                                 self.resourceUuid)

        def extra(session: Session, row: BackupStorageVO) -> None:
            found = _same_place(session, self.hostname.strip(), row.url, row.uuid)
            if found is not None:  # added meanwhile
                raise _taken(self.api_name, self.hostname.strip(), row.url, found)
            session.add(SftpBackupStorageVO(uuid=row.uuid, hostname=self.hostname.strip(),
                                            username=self.username, password=self.password,
                                            sshPort=self.sshPort))

        row = await add_backup_storage(ctx, spec, extra)
        return {"inventory": ctx.inventory(BACKUP_STORAGE, row)}


class UpdateSftpBackupStorage(APIMessage, method="PUT", path="/backup-storage/sftp/{uuid}/actions",
                              resource_type=BACKUP_STORAGE, result=INVENTORY, admin_only=True):
    """Change an sftp backup storage's host, SSH account, name or description; only the
    parameters given."""

    username = Param(str, max_length=255)
    password = Param(str, max_length=255)
    hostname = Param(str, max_length=255, non_empty=True)
    sshPort = Param(int, number_range=(1, 65535))
    uuid = Param(str, required=True, resource_type=BACKUP_STORAGE)
    name = Param(str, max_length=255)
    description = Param(str, max_length=2048)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> None:
            row = get_backup_storage(session, self.uuid)
            sftp = session.get(SftpBackupStorageVO, self.uuid)
            if sftp is None:
                raise ZError(INVALID_ARGUMENT, "invalid argument",
                             f"{self.api_name}: backup storage '{row.name}' ({row.uuid}) is "
                             f"of type {row.type}, not {TYPE}")
            if self.hostname is not None:
                found = _same_place(session, self.hostname.strip(), row.url, row.uuid)
                if found is not None:
                    raise _taken(self.api_name, self.hostname.strip(), row.url, found)
                sftp.hostname = self.hostname.strip()
            for name in ("username", "password", "sshPort"):
                value = getattr(self, name)
                if value is not None:
                    setattr(sftp, name, value)
            if self.name is not None:
                row.name = self.name
            if self.description is not None:
                row.description = self.description

        await ctx.run(change)
        return {"inventory": ctx.inventory(BACKUP_STORAGE,
                                           await ctx.run(get_backup_storage, self.uuid))}


APIS: tuple[type[APIMessage], ...] = (AddSftpBackupStorage, UpdateSftpBackupStorage)
