"""Volumes, snapshots and the image cache, as ZStack's inventories.

A volume is a VM's disk: ``type`` ``Root`` (made from the VM's image) or ``Data``. Its
``status`` says where it is in its life: ``NotInstantiated`` (a data volume created without
a VM: it has no bytes anywhere yet), ``Creating``, ``Ready``, ``Deleted`` (destroyed with
delayed deletion: its bytes are kept until it is expunged or recovered). ``size`` is the
virtual size in bytes, reserved on ``primaryStorageUuid`` while the volume exists there.

A snapshot belongs to a volume and to a tree (one per chain of snapshots of a volume);
``parentUuid`` links it to the snapshot it was taken after, ``latest`` marks the one the
volume currently grows from. The image cache records images copied to a primary storage,
from which root volumes are cloned.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from zcore.db import Base, ResourceMixin, TimestampMixin, UTCDateTime, new_uuid

__all__ = ["ImageCacheVO", "VolumeSnapshotTreeVO", "VolumeSnapshotVO", "VolumeVO"]

_ID = BigInteger().with_variant(Integer(), "sqlite")


class VolumeVO(ResourceMixin, Base):
    """A root or data volume (ZStack's VolumeInventory)."""

    __tablename__ = "VolumeVO"
    __table_args__ = (Index("ix_VolumeVO_name", "name"),)

    primaryStorageUuid: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("PrimaryStorageVO.uuid"), index=True, default=None)
    vmInstanceUuid: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("VmInstanceVO.uuid"), index=True, default=None)
    lastVmInstanceUuid: Mapped[str | None] = mapped_column(String(32), default=None)
    diskOfferingUuid: Mapped[str | None] = mapped_column(String(32), default=None)
    rootImageUuid: Mapped[str | None] = mapped_column(String(32), default=None)
    installPath: Mapped[str | None] = mapped_column(String(2048), default=None)
    type: Mapped[str] = mapped_column(String(64))
    format: Mapped[str | None] = mapped_column(String(64), default=None)
    size: Mapped[int] = mapped_column(BigInteger(), default=0)
    actualSize: Mapped[int | None] = mapped_column(BigInteger(), default=None)
    deviceId: Mapped[int | None] = mapped_column(Integer(), default=None)
    state: Mapped[str] = mapped_column(String(64), default="Enabled")
    status: Mapped[str] = mapped_column(String(64), default="NotInstantiated", index=True)
    isShareable: Mapped[bool] = mapped_column(Boolean(), default=False)
    lastAttachDate: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    lastDetachDate: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    volumeQos: Mapped[str | None] = mapped_column(String(255), default=None)
    protocol: Mapped[str | None] = mapped_column(String(64), default=None)
    #: The host whose own disk holds the bits, for primary storage local to hosts
    #: (``PrimaryStorageDriver.host_local``); not in ZStack's inventory, never queried.
    hostUuid: Mapped[str | None] = mapped_column(String(32), index=True, default=None)


class VolumeSnapshotTreeVO(TimestampMixin, Base):
    """One chain of snapshots of a volume; ``current`` for the chain the volume grows on."""

    __tablename__ = "VolumeSnapshotTreeVO"

    uuid: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_uuid)
    volumeUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("VolumeVO.uuid", ondelete="CASCADE"), index=True)
    current: Mapped[bool] = mapped_column(Boolean(), default=True)
    status: Mapped[str] = mapped_column(String(64), default="Completed")


class VolumeSnapshotVO(ResourceMixin, Base):
    """A snapshot of a volume (ZStack's VolumeSnapshotInventory)."""

    __tablename__ = "VolumeSnapshotVO"

    volumeUuid: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("VolumeVO.uuid", ondelete="CASCADE"), index=True)
    treeUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("VolumeSnapshotTreeVO.uuid", ondelete="CASCADE"), index=True)
    parentUuid: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    primaryStorageUuid: Mapped[str | None] = mapped_column(String(32), default=None)
    primaryStorageInstallPath: Mapped[str | None] = mapped_column(String(2048), default=None)
    type: Mapped[str] = mapped_column(String(64), default="Hypervisor")
    volumeType: Mapped[str] = mapped_column(String(64))
    format: Mapped[str | None] = mapped_column(String(64), default=None)
    size: Mapped[int] = mapped_column(BigInteger(), default=0)
    state: Mapped[str] = mapped_column(String(64), default="Enabled")
    status: Mapped[str] = mapped_column(String(64), default="Ready")
    latest: Mapped[bool] = mapped_column(Boolean(), default=True)
    distance: Mapped[int] = mapped_column(Integer(), default=0)
    groupUuid: Mapped[str | None] = mapped_column(String(32), default=None)


class ImageCacheVO(TimestampMixin, Base):
    """An image copied to a primary storage, from which root volumes are cloned."""

    __tablename__ = "ImageCacheVO"
    __table_args__ = (UniqueConstraint("primaryStorageUuid", "imageUuid"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    primaryStorageUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("PrimaryStorageVO.uuid", ondelete="CASCADE"))
    imageUuid: Mapped[str | None] = mapped_column(String(32), index=True)
    installUrl: Mapped[str] = mapped_column(String(2048))
    mediaType: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger(), default=0)
    md5sum: Mapped[str | None] = mapped_column(String(255), default=None)
