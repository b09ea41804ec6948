"""Disk offerings.

Revision ID: diskoffering_0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision = "diskoffering_0001"
down_revision = None
branch_labels = ("diskoffering",)
depends_on = "zcore_0001"


def upgrade() -> None:
    op.create_table(
        "DiskOfferingVO",
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.String(2048), nullable=True),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.Column("diskSize", sa.BigInteger(), nullable=False),
        sa.Column("sortKey", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("allocatorStrategy", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_DiskOfferingVO")),
        sa.ForeignKeyConstraint(["uuid"], ["ResourceVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_DiskOfferingVO_uuid_ResourceVO")),
    )
    op.create_index(op.f("ix_DiskOfferingVO_name"), "DiskOfferingVO", ["name"])


def downgrade() -> None:
    op.drop_table("DiskOfferingVO")
