"""Hosts.

Revision ID: compute_0002
Revises: compute_0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision = "compute_0002"
down_revision = "compute_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "HostVO",
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.String(2048), nullable=True),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.Column("zoneUuid", sa.String(32), nullable=False),
        sa.Column("clusterUuid", sa.String(32), nullable=False),
        sa.Column("managementIp", sa.String(255), nullable=False),
        sa.Column("hypervisorType", sa.String(64), nullable=False),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("totalCpuCapacity", sa.BigInteger(), nullable=False),
        sa.Column("availableCpuCapacity", sa.BigInteger(), nullable=False),
        sa.Column("cpuSockets", sa.Integer(), nullable=True),
        sa.Column("cpuNum", sa.Integer(), nullable=True),
        sa.Column("totalMemoryCapacity", sa.BigInteger(), nullable=False),
        sa.Column("availableMemoryCapacity", sa.BigInteger(), nullable=False),
        sa.Column("reservedMemoryCapacity", sa.BigInteger(), nullable=False),
        sa.Column("architecture", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_HostVO")),
        sa.ForeignKeyConstraint(["uuid"], ["ResourceVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_HostVO_uuid_ResourceVO")),
        sa.ForeignKeyConstraint(["zoneUuid"], ["ZoneVO.uuid"],
                                name=op.f("fk_HostVO_zoneUuid_ZoneVO")),
        sa.ForeignKeyConstraint(["clusterUuid"], ["ClusterVO.uuid"],
                                name=op.f("fk_HostVO_clusterUuid_ClusterVO")),
        sa.UniqueConstraint("managementIp", name=op.f("uq_HostVO_managementIp")),
    )
    op.create_index(op.f("ix_HostVO_zoneUuid"), "HostVO", ["zoneUuid"])
    op.create_index(op.f("ix_HostVO_clusterUuid"), "HostVO", ["clusterUuid"])
    op.create_index(op.f("ix_HostVO_name"), "HostVO", ["name"])
    # The ping task reads hosts by status; allocation will filter on what is available.
    op.create_index(op.f("ix_HostVO_status"), "HostVO", ["status"])
    op.create_index(op.f("ix_HostVO_availableCpuCapacity"), "HostVO", ["availableCpuCapacity"])
    op.create_index(op.f("ix_HostVO_availableMemoryCapacity"), "HostVO",
                    ["availableMemoryCapacity"])


def downgrade() -> None:
    op.drop_table("HostVO")
