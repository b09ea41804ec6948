"""Zones and clusters, as ZStack's ZoneInventory and ClusterInventory."""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from zcore.db import Base, ResourceMixin

__all__ = ["ClusterVO", "ZoneVO"]


class ZoneVO(ResourceMixin, Base):
    """A zone: the top of the resource tree. At most one zone is the default one."""

    __tablename__ = "ZoneVO"
    __table_args__ = (Index("ix_ZoneVO_name", "name"),)

    state: Mapped[str] = mapped_column(String(64), default="Enabled")
    type: Mapped[str] = mapped_column(String(64), default="zstack")
    isDefault: Mapped[bool] = mapped_column(Boolean(), default=False)


class ClusterVO(ResourceMixin, Base):
    """A cluster of hosts of one hypervisor type, in a zone."""

    __tablename__ = "ClusterVO"
    __table_args__ = (Index("ix_ClusterVO_name", "name"),)

    # No ON DELETE: a zone cannot vanish under its clusters; the cascade deletes them first.
    zoneUuid: Mapped[str] = mapped_column(String(32), ForeignKey("ZoneVO.uuid"), index=True)
    state: Mapped[str] = mapped_column(String(64), default="Enabled")
    hypervisorType: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64), default="zstack")
    architecture: Mapped[str | None] = mapped_column(String(64), default=None)
