"""The garbage collector's jobs (zcore.gc.GarbageCollectorVO).

Revision ID: zcore_0002
Revises: zcore_0001
Create Date: 2024-06-01

On the core's branch, after its base revision; plugin branches still depend on
``zcore_0001``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision: str = "zcore_0002"
down_revision: str | Sequence[str] | None = "zcore_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "GarbageCollectorVO"
INDEXED = ("status", "triggerKey", "nextRunDate")


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("runnerClass", sa.String(255), nullable=False),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("managementNodeUuid", sa.String(32), nullable=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("triggerKey", sa.String(255), nullable=True),
        sa.Column("runInterval", sa.Double(), nullable=True),
        sa.Column("nextRunDate", UTCDateTime(), nullable=True),
        sa.Column("lastError", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f(f"pk_{TABLE}")),
    )
    for column in INDEXED:
        op.create_index(op.f(f"ix_{TABLE}_{column}"), TABLE, [column])


def downgrade() -> None:
    for column in reversed(INDEXED):
        op.drop_index(op.f(f"ix_{TABLE}_{column}"), table_name=TABLE)
    op.drop_table(TABLE)
