"""The table of zone labels."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from zcore.db import Base, ResourceMixin

__all__ = ["COLORS", "ZoneLabelVO"]

COLORS = ("red", "green", "blue")


class ZoneLabelVO(ResourceMixin, Base):
    """A coloured label on a zone; it goes when its zone goes."""

    __tablename__ = "ZoneLabelVO"

    # The compute plugin's table, named as a string: this plugin never imports its models.
    zoneUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("ZoneVO.uuid", ondelete="CASCADE"), index=True)
    color: Mapped[str] = mapped_column(String(32), default="green")
