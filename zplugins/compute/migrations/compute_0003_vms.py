"""VM instances.

Revision ID: compute_0003
Revises: compute_0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision = "compute_0003"
down_revision = "compute_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "VmInstanceVO",
        sa.Column("zoneUuid", sa.String(32), nullable=True),
        sa.Column("clusterUuid", sa.String(32), nullable=True),
        sa.Column("hostUuid", sa.String(32), nullable=True),
        sa.Column("lastHostUuid", sa.String(32), nullable=True),
        sa.Column("imageUuid", sa.String(32), nullable=True),
        sa.Column("instanceOfferingUuid", sa.String(32), nullable=True),
        sa.Column("rootVolumeUuid", sa.String(32), nullable=True),
        sa.Column("defaultL3NetworkUuid", sa.String(32), nullable=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("hypervisorType", sa.String(64), nullable=True),
        sa.Column("cpuNum", sa.Integer(), nullable=False),
        sa.Column("cpuSpeed", sa.BigInteger(), nullable=False),
        sa.Column("memorySize", sa.BigInteger(), nullable=False),
        sa.Column("reservedMemorySize", sa.BigInteger(), nullable=False),
        sa.Column("platform", sa.String(255), nullable=True),
        sa.Column("architecture", sa.String(64), nullable=True),
        sa.Column("guestOsType", sa.String(255), nullable=True),
        sa.Column("allocatorStrategy", sa.String(64), nullable=True),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.String(2048), nullable=True),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_VmInstanceVO")),
        sa.ForeignKeyConstraint(["zoneUuid"], ["ZoneVO.uuid"],
                                name=op.f("fk_VmInstanceVO_zoneUuid_ZoneVO")),
        sa.ForeignKeyConstraint(["hostUuid"], ["HostVO.uuid"],
                                name=op.f("fk_VmInstanceVO_hostUuid_HostVO")),
        sa.ForeignKeyConstraint(["uuid"], ["ResourceVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_VmInstanceVO_uuid_ResourceVO")),
        sa.ForeignKeyConstraint(["clusterUuid"], ["ClusterVO.uuid"],
                                name=op.f("fk_VmInstanceVO_clusterUuid_ClusterVO")),
    )
    op.create_index(op.f("ix_VmInstanceVO_clusterUuid"), "VmInstanceVO", ["clusterUuid"])
    op.create_index(op.f("ix_VmInstanceVO_hostUuid"), "VmInstanceVO", ["hostUuid"])
    op.create_index(op.f("ix_VmInstanceVO_lastHostUuid"), "VmInstanceVO", ["lastHostUuid"])
    op.create_index(op.f("ix_VmInstanceVO_name"), "VmInstanceVO", ["name"])
    op.create_index(op.f("ix_VmInstanceVO_state"), "VmInstanceVO", ["state"])
    op.create_index(op.f("ix_VmInstanceVO_zoneUuid"), "VmInstanceVO", ["zoneUuid"])


def downgrade() -> None:
    op.drop_table("VmInstanceVO")
