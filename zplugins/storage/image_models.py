"""Images and their copies on backup storage, as ZStack's ImageInventory and
ImageBackupStorageRefInventory."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from zcore.api import Inventory
from zcore.db import Base, ResourceMixin, SystemTagVO, TimestampMixin, new_uuid

__all__ = [
    "IMAGE",
    "IMAGE_REF",
    "ImageBackupStorageRefVO",
    "ImageVO",
    "image_inventory",
    "image_ref_inventory",
]

IMAGE = "ImageVO"
IMAGE_REF = "ImageBackupStorageRefVO"


class ImageVO(ResourceMixin, Base):
    """An image: a template of root or data volumes, or an ISO, kept on backup storage.

    ``status`` is ``Downloading`` while AddImage runs (``actualSize`` then counts the bytes
    downloaded so far and ``size`` the bytes expected, 0 while unknown), ``Ready`` after, and
    ``Deleted`` once deleted under the ``Delay`` or ``Never`` deletion policy, until it is
    recovered or expunged.
    """

    __tablename__ = "ImageVO"
    __table_args__ = (Index("ix_ImageVO_name", "name"),)

    state: Mapped[str] = mapped_column(String(64), default="Enabled")
    status: Mapped[str] = mapped_column(String(64), default="Downloading", index=True)
    size: Mapped[int] = mapped_column(BigInteger(), default=0)
    actualSize: Mapped[int] = mapped_column(BigInteger(), default=0)
    md5Sum: Mapped[str | None] = mapped_column(String(255), default=None)
    url: Mapped[str] = mapped_column(String(1024))
    mediaType: Mapped[str] = mapped_column(String(64))
    guestOsType: Mapped[str | None] = mapped_column(String(255), default=None)
    type: Mapped[str] = mapped_column(String(64), default="zstack")
    platform: Mapped[str | None] = mapped_column(String(64), default=None)
    format: Mapped[str] = mapped_column(String(64))
    system: Mapped[bool] = mapped_column(Boolean(), default=False)
    architecture: Mapped[str | None] = mapped_column(String(32), default=None)
    virtio: Mapped[bool] = mapped_column(Boolean(), default=True)

    backupStorageRefs: Mapped[list[ImageBackupStorageRefVO]] = relationship(
        viewonly=True, lazy="selectin",
        order_by=lambda: (ImageBackupStorageRefVO.createDate, ImageBackupStorageRefVO.uuid))
    systemTagRows: Mapped[list[SystemTagVO]] = relationship(
        SystemTagVO, primaryjoin=lambda: ImageVO.uuid == SystemTagVO.resourceUuid,
        foreign_keys=lambda: [SystemTagVO.resourceUuid], viewonly=True, lazy="selectin",
        order_by=lambda: (SystemTagVO.createDate, SystemTagVO.uuid))


class ImageBackupStorageRefVO(TimestampMixin, Base):
    """A copy of an image on one backup storage. Not a resource of its own."""

    __tablename__ = "ImageBackupStorageRefVO"
    __table_args__ = (UniqueConstraint("imageUuid", "backupStorageUuid"),)

    uuid: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_uuid)
    imageUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("ImageVO.uuid", ondelete="CASCADE"))
    # No ON DELETE: the cascade removes the copies before the backup storage goes.
    backupStorageUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("BackupStorageVO.uuid"), index=True)
    installPath: Mapped[str | None] = mapped_column(String(2048), default=None)
    exportUrl: Mapped[str | None] = mapped_column(String(2048), default=None)
    exportMd5Sum: Mapped[str | None] = mapped_column(String(255), default=None)
    status: Mapped[str] = mapped_column(String(64), default="Downloading")


def image_ref_inventory(ref: ImageBackupStorageRefVO) -> dict[str, Any]:
    """The fields of ZStack's ImageBackupStorageRefInventory."""
    return {"imageUuid": ref.imageUuid, "backupStorageUuid": ref.backupStorageUuid,
            "installPath": ref.installPath, "exportUrl": ref.exportUrl,
            "exportMd5Sum": ref.exportMd5Sum, "status": ref.status,
            "createDate": ref.createDate, "lastOpDate": ref.lastOpDate}


def image_inventory(image: ImageVO) -> dict[str, Any]:
    """The fields of ZStack's ImageInventory; ``systemTags`` are the image's system tags."""
    refs = [Inventory("org.zstack.header.image.ImageBackupStorageRefInventory",
                      image_ref_inventory(ref)) for ref in image.backupStorageRefs]
    return {"uuid": image.uuid, "name": image.name, "description": image.description,
            "state": image.state, "status": image.status, "size": image.size,
            "actualSize": image.actualSize, "md5Sum": image.md5Sum, "url": image.url,
            "mediaType": image.mediaType, "guestOsType": image.guestOsType,
            "type": image.type, "platform": image.platform, "format": image.format,
            "system": image.system, "architecture": image.architecture,
            "virtio": image.virtio, "backupStorageRefs": refs,
            "systemTags": [tag.tag for tag in image.systemTagRows],
            "createDate": image.createDate, "lastOpDate": image.lastOpDate}
