"""The host whose own disk holds a volume on local storage.

Revision ID: volume_0002
Revises: volume_0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "volume_0002"
down_revision = "volume_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("VolumeVO", sa.Column("hostUuid", sa.String(32), nullable=True))
    op.create_index("ix_VolumeVO_hostUuid", "VolumeVO", ["hostUuid"])


def downgrade() -> None:
    op.drop_index("ix_VolumeVO_hostUuid", table_name="VolumeVO")
    op.drop_column("VolumeVO", "hostUuid")
