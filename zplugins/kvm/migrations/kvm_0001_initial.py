"""KVM hosts.

Revision ID: kvm_0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "kvm_0001"
down_revision = None
branch_labels = ("kvm",)
depends_on = ("zcore_0001", "compute_0002")


def upgrade() -> None:
    op.create_table(
        "KVMHostVO",
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("password", sa.String(255), nullable=False),
        sa.Column("sshPort", sa.Integer(), nullable=False),
        sa.Column("osDistribution", sa.String(64), nullable=True),
        sa.Column("osRelease", sa.String(64), nullable=True),
        sa.Column("osVersion", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_KVMHostVO")),
        sa.ForeignKeyConstraint(["uuid"], ["HostVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_KVMHostVO_uuid_HostVO")),
    )


def downgrade() -> None:
    op.drop_table("KVMHostVO")
