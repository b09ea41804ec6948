"""Simulated backup storage: the ``Simulator`` backup storage driver and
``AddSimulatorBackupStorage``.

A simulated backup storage has the capacity it was added with and stores nothing. Its
downloads are real transfers without the storing: the URL (``http(s)://`` or ``file://``) is
read to the end, so size and md5 are true, a bad URL fails as it would on real storage, and
an image larger than the available capacity is refused; the bytes are then thrown away.
Deleting an image deletes nothing. Needs the storage plugin.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from zcore import ApiMessage
from zcore.api import ApiContext, APIMessage, Param
from zcore.errors import INVALID_ARGUMENT, ZError
from zplugins.storage.backup import (
    BACKUP_STORAGE,
    BackupStorageDriver,
    BackupStorageInfo,
    BackupStorageSpec,
    Capacity,
    DownloadResult,
    ImageInfo,
    Progress,
    add_backup_storage,
    check_resource_uuid,
    fetch,
)

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = ["AddSimulatorBackupStorage", "SimulatorBackupStorage"]

MAX_LONG = 2**63 - 1


class SimulatorBackupStorage(BackupStorageDriver):
    """Backup storage that keeps nothing but its declared capacity."""

    type = "Simulator"

    async def connect(self, node: Node, bs: BackupStorageInfo) -> Capacity:
        return Capacity(bs.totalCapacity, bs.availableCapacity)

    def install_path(self, bs: BackupStorageInfo, image: ImageInfo) -> str:
        return f"{bs.url.rstrip('/')}/images/{image.uuid}/{image.uuid}.{image.format}"

    async def download(self, node: Node, bs: BackupStorageInfo, image: ImageInfo, url: str,
                       progress: Progress) -> DownloadResult:
        fetched = await fetch(url, None, progress)
        return DownloadResult(self.install_path(bs, image), fetched.size, fetched.md5,
                              fetched.virtual_size)

    async def delete(self, node: Node, bs: BackupStorageInfo, install_path: str) -> None:
        return None


class AddSimulatorBackupStorage(APIMessage, method="POST", path="/backup-storage/simulators",
                                resource_type=BACKUP_STORAGE,
                                result={"inventory": "BackupStorageInventory"},
                                admin_only=True):
    """Add a simulated backup storage with the given capacity (bytes), ``Connected``."""

    totalCapacity = Param(int, default=0, number_range=(0, MAX_LONG), api_type="long")
    availableCapacity = Param(int, default=0, number_range=(0, MAX_LONG), api_type="long")
    url = Param(str, required=True, max_length=2048)
    name = Param(str, required=True, max_length=255)
    description = Param(str, max_length=2048)
    type = Param(str, valid_values=(SimulatorBackupStorage.type,))
    importImages = Param(bool, default=False)
    resourceUuid = Param(str)
    tagUuids = Param(list, description="Not supported yet: give systemTags or userTags")

    async def validate(self, ctx: ApiContext) -> None:
        if self.availableCapacity > self.totalCapacity:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"{self.api_name}: availableCapacity {self.availableCapacity} is more "
                         f"than totalCapacity {self.totalCapacity}")
        if self.importImages:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'importImages' of {self.api_name}: importing images is "
                         "not supported; a simulated backup storage holds none")
        if self.tagUuids:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'tagUuids' of {self.api_name}: attaching existing tags "
                         "by uuid is not supported yet; give systemTags or userTags instead")
        check_resource_uuid(self.api_name, self.resourceUuid)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        spec = BackupStorageSpec(self.name, self.url, SimulatorBackupStorage.type,
                                 self.description, self.resourceUuid, self.totalCapacity,
                                 self.availableCapacity)
        row = await add_backup_storage(ctx, spec)
        return {"inventory": ctx.inventory(BACKUP_STORAGE, row)}


def api_messages() -> Iterator[ApiMessage]:
    yield ApiMessage(AddSimulatorBackupStorage)
