"""VM NICs.

Revision ID: network_0002
Revises: network_0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision = "network_0002"
down_revision = "network_0001"
branch_labels = None
depends_on = ("compute_0003",)


def upgrade() -> None:
    op.create_table(
        "VmNicVO",
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("vmInstanceUuid", sa.String(32), nullable=True),
        sa.Column("l3NetworkUuid", sa.String(32), nullable=False),
        sa.Column("mac", sa.String(17), nullable=False),
        sa.Column("ip", sa.String(128), nullable=True),
        sa.Column("netmask", sa.String(128), nullable=True),
        sa.Column("gateway", sa.String(128), nullable=True),
        sa.Column("ipVersion", sa.Integer(), nullable=True),
        sa.Column("deviceId", sa.Integer(), nullable=False),
        sa.Column("internalName", sa.String(128), nullable=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("driverType", sa.String(64), nullable=True),
        sa.Column("hypervisorType", sa.String(64), nullable=True),
        sa.Column("metaData", sa.String(255), nullable=True),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_VmNicVO")),
        sa.ForeignKeyConstraint(["vmInstanceUuid"], ["VmInstanceVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_VmNicVO_vmInstanceUuid_VmInstanceVO")),
        sa.ForeignKeyConstraint(["l3NetworkUuid"], ["L3NetworkVO.uuid"],
                                name=op.f("fk_VmNicVO_l3NetworkUuid_L3NetworkVO")),
        sa.ForeignKeyConstraint(["uuid"], ["ResourceVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_VmNicVO_uuid_ResourceVO")),
        sa.UniqueConstraint("mac", name=op.f("uq_VmNicVO_mac")),
        sa.UniqueConstraint("vmInstanceUuid", "deviceId", name=op.f("uq_VmNicVO_vmInstanceUuid_deviceId")),
    )
    op.create_index(op.f("ix_VmNicVO_ip"), "VmNicVO", ["ip"])
    op.create_index(op.f("ix_VmNicVO_l3NetworkUuid"), "VmNicVO", ["l3NetworkUuid"])
    op.create_index(op.f("ix_VmNicVO_vmInstanceUuid"), "VmNicVO", ["vmInstanceUuid"])


def downgrade() -> None:
    op.drop_table("VmNicVO")
