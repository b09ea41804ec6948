"""Indexes that serve host allocation: its filter and its order, so it reads a few hosts.

The allocator's candidate query (``zplugins.compute.allocators``) filters on ``state``,
``status`` and the available capacity and takes the hosts with the most available memory
(or CPU) first, ``LIMIT`` a few. With these indexes the database walks one of them backwards
from the largest capacity and stops at the first hosts that meet the other conditions,
instead of reading every Connected host and sorting them: the query no longer grows with
the number of hosts.

Revision ID: compute_0005
Revises: compute_0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "compute_0005"
down_revision = "compute_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_HostVO_allocation_memory", "HostVO",
                    ["state", "status", "availableMemoryCapacity", "availableCpuCapacity",
                     "uuid"])
    op.create_index("ix_HostVO_allocation_cpu", "HostVO",
                    ["state", "status", "availableCpuCapacity", "availableMemoryCapacity",
                     "uuid"])


def downgrade() -> None:
    op.drop_index("ix_HostVO_allocation_cpu", table_name="HostVO")
    op.drop_index("ix_HostVO_allocation_memory", table_name="HostVO")
