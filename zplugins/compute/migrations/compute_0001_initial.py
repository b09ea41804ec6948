"""Zones and clusters.

Revision ID: compute_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision = "compute_0001"
down_revision = None
branch_labels = ("compute",)
depends_on = "zcore_0001"


def _resource_columns(table: str) -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.String(2048), nullable=True),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f(f"pk_{table}")),
        sa.ForeignKeyConstraint(["uuid"], ["ResourceVO.uuid"], ondelete="CASCADE",
                                name=op.f(f"fk_{table}_uuid_ResourceVO")),
    ]


def upgrade() -> None:
    op.create_table(
        "ZoneVO",
        *_resource_columns("ZoneVO"),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("isDefault", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "ClusterVO",
        *_resource_columns("ClusterVO"),
        sa.Column("zoneUuid", sa.String(32), nullable=False),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("hypervisorType", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("architecture", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(["zoneUuid"], ["ZoneVO.uuid"],
                                name=op.f("fk_ClusterVO_zoneUuid_ZoneVO")),
    )
    op.create_index(op.f("ix_ClusterVO_zoneUuid"), "ClusterVO", ["zoneUuid"])
    # Users find zones and clusters by name far more often than by anything else.
    op.create_index(op.f("ix_ZoneVO_name"), "ZoneVO", ["name"])
    op.create_index(op.f("ix_ClusterVO_name"), "ClusterVO", ["name"])


def downgrade() -> None:
    op.drop_table("ClusterVO")
    op.drop_table("ZoneVO")
