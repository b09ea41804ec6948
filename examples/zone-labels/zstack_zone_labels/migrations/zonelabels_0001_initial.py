"""Zone labels.

Revision ID: zonelabels_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision = "zonelabels_0001"
down_revision = None
branch_labels = ("zonelabels",)
# The core's tables, and the compute plugin's branch (by its label: its revision ids are
# its own business), whose ZoneVO table the labels point at.
depends_on = ("zcore_0001", "compute")


def upgrade() -> None:
    op.create_table(
        "ZoneLabelVO",
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.String(2048), nullable=True),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.Column("zoneUuid", sa.String(32), nullable=False),
        sa.Column("color", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_ZoneLabelVO")),
        sa.ForeignKeyConstraint(["uuid"], ["ResourceVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_ZoneLabelVO_uuid_ResourceVO")),
        sa.ForeignKeyConstraint(["zoneUuid"], ["ZoneVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_ZoneLabelVO_zoneUuid_ZoneVO")),
    )
    op.create_index(op.f("ix_ZoneLabelVO_zoneUuid"), "ZoneLabelVO", ["zoneUuid"])


def downgrade() -> None:
    op.drop_table("ZoneLabelVO")
