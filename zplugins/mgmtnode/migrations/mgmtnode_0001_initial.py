"""The management node table.

Revision ID: mgmtnode_0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision = "mgmtnode_0001"
down_revision = None
branch_labels = ("mgmtnode",)
depends_on = "zcore_0001"


def upgrade() -> None:
    op.create_table(
        "ManagementNodeVO",
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("hostName", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("joinDate", UTCDateTime(), nullable=False),
        sa.Column("heartBeat", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_ManagementNodeVO")),
    )
    op.create_index(op.f("ix_ManagementNodeVO_heartBeat"), "ManagementNodeVO", ["heartBeat"])


def downgrade() -> None:
    op.drop_table("ManagementNodeVO")
