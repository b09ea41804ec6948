"""Primary storage, its clusters and its hosts.

Revision ID: storage_0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision = "storage_0001"
down_revision = None
branch_labels = ("storage",)
# ZoneVO and ClusterVO come with compute's first revision, HostVO with its second.
depends_on = ("zcore_0001", "compute", "compute_0002")

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "PrimaryStorageVO",
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.String(2048), nullable=True),
        sa.Column("zoneUuid", sa.String(32), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("mountPath", sa.String(2048), nullable=True),
        sa.Column("totalCapacity", sa.BigInteger(), nullable=False),
        sa.Column("availableCapacity", sa.BigInteger(), nullable=False),
        sa.Column("totalPhysicalCapacity", sa.BigInteger(), nullable=False),
        sa.Column("availablePhysicalCapacity", sa.BigInteger(), nullable=False),
        sa.Column("systemUsedCapacity", sa.BigInteger(), nullable=False),
        sa.Column("reservedCapacity", sa.BigInteger(), nullable=False),
        sa.Column("allocatedCapacity", sa.BigInteger(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_PrimaryStorageVO")),
        sa.ForeignKeyConstraint(["uuid"], ["ResourceVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_PrimaryStorageVO_uuid_ResourceVO")),
        sa.ForeignKeyConstraint(["zoneUuid"], ["ZoneVO.uuid"],
                                name=op.f("fk_PrimaryStorageVO_zoneUuid_ZoneVO")),
        # The database itself refuses a reservation that would make the capacity negative.
        sa.CheckConstraint(sa.column("availableCapacity") >= 0,
                           name=op.f("ck_PrimaryStorageVO_availableCapacity_not_negative")),
        sa.CheckConstraint(sa.column("allocatedCapacity") >= 0,
                           name=op.f("ck_PrimaryStorageVO_allocatedCapacity_not_negative")),
    )
    op.create_index(op.f("ix_PrimaryStorageVO_zoneUuid"), "PrimaryStorageVO", ["zoneUuid"])
    op.create_index(op.f("ix_PrimaryStorageVO_name"), "PrimaryStorageVO", ["name"])
    op.create_index(op.f("ix_PrimaryStorageVO_type"), "PrimaryStorageVO", ["type"])
    # Allocation picks primary storage by free space: an index range scan.
    op.create_index(op.f("ix_PrimaryStorageVO_availableCapacity"), "PrimaryStorageVO",
                    ["availableCapacity"])

    op.create_table(
        "PrimaryStorageClusterRefVO",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("primaryStorageUuid", sa.String(32), nullable=False),
        sa.Column("clusterUuid", sa.String(32), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_PrimaryStorageClusterRefVO")),
        sa.ForeignKeyConstraint(
            ["primaryStorageUuid"], ["PrimaryStorageVO.uuid"], ondelete="CASCADE",
            name=op.f("fk_PrimaryStorageClusterRefVO_primaryStorageUuid_PrimaryStorageVO")),
        sa.ForeignKeyConstraint(
            ["clusterUuid"], ["ClusterVO.uuid"], ondelete="CASCADE",
            name=op.f("fk_PrimaryStorageClusterRefVO_clusterUuid_ClusterVO")),
        sa.UniqueConstraint(
            "primaryStorageUuid", "clusterUuid",
            name=op.f("uq_PrimaryStorageClusterRefVO_primaryStorageUuid_clusterUuid")),
    )
    op.create_index(op.f("ix_PrimaryStorageClusterRefVO_clusterUuid"),
                    "PrimaryStorageClusterRefVO", ["clusterUuid"])

    op.create_table(
        "PrimaryStorageHostRefVO",
        sa.Column("primaryStorageUuid", sa.String(32), nullable=False),
        sa.Column("hostUuid", sa.String(32), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("totalPhysicalCapacity", sa.BigInteger(), nullable=False),
        sa.Column("availablePhysicalCapacity", sa.BigInteger(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("primaryStorageUuid", "hostUuid",
                                name=op.f("pk_PrimaryStorageHostRefVO")),
        sa.ForeignKeyConstraint(
            ["primaryStorageUuid"], ["PrimaryStorageVO.uuid"], ondelete="CASCADE",
            name=op.f("fk_PrimaryStorageHostRefVO_primaryStorageUuid_PrimaryStorageVO")),
        sa.ForeignKeyConstraint(
            ["hostUuid"], ["HostVO.uuid"], ondelete="CASCADE",
            name=op.f("fk_PrimaryStorageHostRefVO_hostUuid_HostVO")),
    )
    op.create_index(op.f("ix_PrimaryStorageHostRefVO_hostUuid"), "PrimaryStorageHostRefVO",
                    ["hostUuid"])


def downgrade() -> None:
    op.drop_table("PrimaryStorageHostRefVO")
    op.drop_table("PrimaryStorageClusterRefVO")
    op.drop_table("PrimaryStorageVO")
