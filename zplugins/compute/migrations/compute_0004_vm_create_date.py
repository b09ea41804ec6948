"""An index on VmInstanceVO.createDate, for pages of VMs sorted by creation.

Revision ID: compute_0004
Revises: compute_0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "compute_0004"
down_revision = "compute_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_VmInstanceVO_createDate", "VmInstanceVO", ["createDate"])


def downgrade() -> None:
    op.drop_index("ix_VmInstanceVO_createDate", table_name="VmInstanceVO")
