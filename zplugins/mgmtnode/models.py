"""The management node table, as ZStack's ManagementNodeInventory."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from zcore.db import Base, UTCDateTime, utcnow


class ManagementNodeVO(Base):
    __tablename__ = "ManagementNodeVO"

    uuid: Mapped[str] = mapped_column(String(32), primary_key=True)
    hostName: Mapped[str] = mapped_column(String(255))
    port: Mapped[int]
    joinDate: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartBeat: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
