"""What the KVM plugin keeps about its hosts, beside the compute plugin's HostVO."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from zcore.db import Base

__all__ = ["KVMHostVO"]


class KVMHostVO(Base):
    """A KVM host's SSH credentials (for deploying its agent) and operating system.

    One row per KVM host, deleted with it (``ON DELETE CASCADE``). ``password`` is kept as
    given, since SSH needs it; it never leaves the node in a reply.
    """

    __tablename__ = "KVMHostVO"

    uuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("HostVO.uuid", ondelete="CASCADE"), primary_key=True)
    username: Mapped[str] = mapped_column(String(255))
    password: Mapped[str] = mapped_column(String(255))
    sshPort: Mapped[int] = mapped_column(Integer(), default=22)
    osDistribution: Mapped[str | None] = mapped_column(String(64), default=None)
    osRelease: Mapped[str | None] = mapped_column(String(64), default=None)
    osVersion: Mapped[str | None] = mapped_column(String(64), default=None)
