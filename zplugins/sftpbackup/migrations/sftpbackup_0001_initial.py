"""The sftp backup storage's host and SSH account.

Revision ID: sftpbackup_0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "sftpbackup_0001"
down_revision = None
branch_labels = ("sftpbackup",)
depends_on = ("zcore_0001", "image")


def upgrade() -> None:
    op.create_table(
        "SftpBackupStorageVO",
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("password", sa.String(255), nullable=False),
        sa.Column("sshPort", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_SftpBackupStorageVO")),
        sa.ForeignKeyConstraint(["uuid"], ["BackupStorageVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_SftpBackupStorageVO_uuid_BackupStorageVO")),
    )
    op.create_index(op.f("ix_SftpBackupStorageVO_hostname"), "SftpBackupStorageVO",
                    ["hostname"])


def downgrade() -> None:
    op.drop_table("SftpBackupStorageVO")
