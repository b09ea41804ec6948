"""Instance offerings.

Revision ID: offering_0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision = "offering_0001"
down_revision = None
branch_labels = ("offering",)
depends_on = "zcore_0001"


def upgrade() -> None:
    op.create_table(
        "InstanceOfferingVO",
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.String(2048), nullable=True),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.Column("cpuNum", sa.Integer(), nullable=False),
        sa.Column("cpuSpeed", sa.Integer(), nullable=False),
        sa.Column("memorySize", sa.BigInteger(), nullable=False),
        sa.Column("reservedMemorySize", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("allocatorStrategy", sa.String(255), nullable=True),
        sa.Column("sortKey", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_InstanceOfferingVO")),
        sa.ForeignKeyConstraint(["uuid"], ["ResourceVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_InstanceOfferingVO_uuid_ResourceVO")),
    )
    op.create_index(op.f("ix_InstanceOfferingVO_name"), "InstanceOfferingVO", ["name"])


def downgrade() -> None:
    op.drop_table("InstanceOfferingVO")
