"""The sftp backend's own columns of a backup storage: the host and how to log in to it."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from zcore.db import Base

__all__ = ["SftpBackupStorageVO"]


class SftpBackupStorageVO(Base):
    """Where an sftp backup storage's directory is: ``hostname``, ``sshPort``, and the SSH
    account (``username``, ``password``) the agent issue will use. One row per
    ``BackupStorageVO`` of type ``SftpBackupStorage``; it goes with it."""

    __tablename__ = "SftpBackupStorageVO"
    __table_args__ = (Index("ix_SftpBackupStorageVO_hostname", "hostname"),)

    uuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("BackupStorageVO.uuid", ondelete="CASCADE"), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    username: Mapped[str] = mapped_column(String(255))
    password: Mapped[str] = mapped_column(String(255))
    sshPort: Mapped[int] = mapped_column(Integer(), default=22)
