"""The identity tables: accounts (resources) and their login sessions (not resources)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from zcore.db import Base, ResourceMixin, UTCDateTime

__all__ = ["AccountVO", "SessionVO"]


class AccountVO(ResourceMixin, Base):
    """An account, as ZStack's ``AccountInventory`` plus the password hash.

    ``password`` holds an argon2 hash of what the client sent at creation (ZStack's clients
    send the SHA-512 hex digest of the password), never that value itself; it is not part of
    the inventory. An account owns its own row (``ResourceVO.ownerAccountUuid`` is its
    uuid), so a normal account sees itself and no other.
    """

    __tablename__ = "AccountVO"
    __table_args__ = (UniqueConstraint("name"),)

    type: Mapped[str] = mapped_column(String(64))
    password: Mapped[str] = mapped_column(String(255))


class SessionVO(Base):
    """A login session, as ZStack's ``SessionInventory``; it goes with its account."""

    __tablename__ = "SessionVO"

    uuid: Mapped[str] = mapped_column(String(32), primary_key=True)
    accountUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("AccountVO.uuid", ondelete="CASCADE"), index=True)
    userUuid: Mapped[str] = mapped_column(String(32))
    userType: Mapped[str] = mapped_column(String(64))
    createDate: Mapped[datetime] = mapped_column(UTCDateTime())
    expiredDate: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
