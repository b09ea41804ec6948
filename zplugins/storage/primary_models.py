"""Primary storage and its attachments, as ZStack's PrimaryStorageInventory.

``PrimaryStorageVO`` holds the capacity in indexed integer columns (bytes), so that choosing a
primary storage for a volume is an indexed query and reserving space a conditional UPDATE
(:mod:`zplugins.storage.public`). ``PrimaryStorageClusterRefVO`` says which clusters a primary
storage is attached to (one row per pair); ``PrimaryStorageHostRefVO`` records, per host of
those clusters, what the host reported when the storage was prepared on it. Both go with
either side through ``ON DELETE CASCADE``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    column,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from zcore.db import Base, ResourceMixin, TimestampMixin

__all__ = ["PrimaryStorageClusterRefVO", "PrimaryStorageHostRefVO", "PrimaryStorageVO"]

# An autoincrement key: BIGINT on the servers, INTEGER (the rowid) on SQLite.
_ID = BigInteger().with_variant(Integer(), "sqlite")


class PrimaryStorageClusterRefVO(TimestampMixin, Base):
    """Primary storage ``primaryStorageUuid`` is attached to cluster ``clusterUuid``."""

    __tablename__ = "PrimaryStorageClusterRefVO"
    __table_args__ = (UniqueConstraint("primaryStorageUuid", "clusterUuid"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    primaryStorageUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("PrimaryStorageVO.uuid", ondelete="CASCADE"))
    clusterUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("ClusterVO.uuid", ondelete="CASCADE"), index=True)


class PrimaryStorageHostRefVO(TimestampMixin, Base):
    """What host ``hostUuid`` reported when primary storage ``primaryStorageUuid`` was
    prepared on it (mounted, initialised): its view of the storage's physical capacity."""

    __tablename__ = "PrimaryStorageHostRefVO"

    primaryStorageUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("PrimaryStorageVO.uuid", ondelete="CASCADE"), primary_key=True)
    hostUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("HostVO.uuid", ondelete="CASCADE"), primary_key=True,
        index=True)
    status: Mapped[str] = mapped_column(String(64), default="Connected")
    totalPhysicalCapacity: Mapped[int] = mapped_column(BigInteger(), default=0)
    availablePhysicalCapacity: Mapped[int] = mapped_column(BigInteger(), default=0)


class PrimaryStorageVO(ResourceMixin, Base):
    """Where volumes live: a storage of one ``type`` (a driver name), in a zone.

    Capacity, in bytes: ``totalPhysicalCapacity``/``availablePhysicalCapacity`` as the storage
    last reported them; ``systemUsedCapacity`` what is used on it by others than us;
    ``totalCapacity`` the physical total times the over-provisioning ratio;
    ``availableCapacity`` what volumes may still reserve: ``totalCapacity`` minus
    ``systemUsedCapacity``, the kept-free ``reservedCapacity`` and the ``allocatedCapacity``
    of volumes, never below zero. The last two are bookkeeping, not part of the inventory.
    """

    __tablename__ = "PrimaryStorageVO"
    __table_args__ = (
        Index("ix_PrimaryStorageVO_name", "name"),
        CheckConstraint(column("availableCapacity") >= 0, name="availableCapacity_not_negative"),
        CheckConstraint(column("allocatedCapacity") >= 0, name="allocatedCapacity_not_negative"),
    )

    # No ON DELETE: a zone cannot vanish under its primary storage; the cascade deletes it.
    zoneUuid: Mapped[str] = mapped_column(String(32), ForeignKey("ZoneVO.uuid"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    type: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(64), default="Enabled")
    status: Mapped[str] = mapped_column(String(64), default="Connecting")
    mountPath: Mapped[str | None] = mapped_column(String(2048), default=None)
    totalCapacity: Mapped[int] = mapped_column(BigInteger(), default=0)
    availableCapacity: Mapped[int] = mapped_column(BigInteger(), default=0, index=True)
    totalPhysicalCapacity: Mapped[int] = mapped_column(BigInteger(), default=0)
    availablePhysicalCapacity: Mapped[int] = mapped_column(BigInteger(), default=0)
    systemUsedCapacity: Mapped[int] = mapped_column(BigInteger(), default=0)
    reservedCapacity: Mapped[int] = mapped_column(BigInteger(), default=0)
    allocatedCapacity: Mapped[int] = mapped_column(BigInteger(), default=0)

    clusterRefs: Mapped[list[PrimaryStorageClusterRefVO]] = relationship(
        PrimaryStorageClusterRefVO, lazy="selectin", viewonly=True,
        order_by=(PrimaryStorageClusterRefVO.createDate, PrimaryStorageClusterRefVO.id))

    @property
    def attachedClusterUuids(self) -> list[str]:
        return [ref.clusterUuid for ref in self.clusterRefs]

