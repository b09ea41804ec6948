"""L2 and L3 networks, IP ranges, DNS, used IPs and the network-service framework.

Revision ID: network_0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision = "network_0001"
down_revision = None
branch_labels = ("network",)
depends_on = ("zcore_0001", "compute")

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _resource_columns(table: str) -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.String(2048), nullable=True),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f(f"pk_{table}")),
        sa.ForeignKeyConstraint(["uuid"], ["ResourceVO.uuid"], ondelete="CASCADE",
                                name=op.f(f"fk_{table}_uuid_ResourceVO")),
    ]


def _timestamps() -> list[sa.Column[object]]:
    return [sa.Column("createDate", UTCDateTime(), nullable=False),
            sa.Column("lastOpDate", UTCDateTime(), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "L2NetworkVO",
        *_resource_columns("L2NetworkVO"),
        sa.Column("zoneUuid", sa.String(32), nullable=False),
        sa.Column("physicalInterface", sa.String(1024), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("vSwitchType", sa.String(128), nullable=False),
        sa.Column("virtualNetworkId", sa.Integer(), nullable=False),
        sa.Column("isolated", sa.Boolean(), nullable=False),
        sa.Column("pvlan", sa.String(1024), nullable=True),
        sa.ForeignKeyConstraint(["zoneUuid"], ["ZoneVO.uuid"],
                                name=op.f("fk_L2NetworkVO_zoneUuid_ZoneVO")),
    )
    # One L2 network per (interface, VLAN) in a zone; MariaDB indexes at most 3072 bytes.
    op.create_index(op.f("ix_L2NetworkVO_zoneUuid_physicalInterface_virtualNetworkId"),
                    "L2NetworkVO", ["zoneUuid", "physicalInterface", "virtualNetworkId"],
                    unique=True, mysql_length={"physicalInterface": 255})
    op.create_index(op.f("ix_L2NetworkVO_name"), "L2NetworkVO", ["name"])

    op.create_table(
        "L2NetworkClusterRefVO",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("l2NetworkUuid", sa.String(32), nullable=False),
        sa.Column("clusterUuid", sa.String(32), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_L2NetworkClusterRefVO")),
        sa.ForeignKeyConstraint(["l2NetworkUuid"], ["L2NetworkVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_L2NetworkClusterRefVO_l2NetworkUuid_L2NetworkVO")),
        sa.ForeignKeyConstraint(["clusterUuid"], ["ClusterVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_L2NetworkClusterRefVO_clusterUuid_ClusterVO")),
        sa.UniqueConstraint("l2NetworkUuid", "clusterUuid",
                            name=op.f("uq_L2NetworkClusterRefVO_l2NetworkUuid_clusterUuid")),
    )
    op.create_index(op.f("ix_L2NetworkClusterRefVO_clusterUuid"), "L2NetworkClusterRefVO",
                    ["clusterUuid"])

    op.create_table(
        "L3NetworkVO",
        *_resource_columns("L3NetworkVO"),
        sa.Column("zoneUuid", sa.String(32), nullable=False),
        sa.Column("l2NetworkUuid", sa.String(32), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("system", sa.Boolean(), nullable=False),
        sa.Column("dnsDomain", sa.String(255), nullable=True),
        sa.Column("ipVersion", sa.Integer(), nullable=False),
        sa.Column("enableIPAM", sa.Boolean(), nullable=False),
        sa.Column("isolated", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["zoneUuid"], ["ZoneVO.uuid"],
                                name=op.f("fk_L3NetworkVO_zoneUuid_ZoneVO")),
        sa.ForeignKeyConstraint(["l2NetworkUuid"], ["L2NetworkVO.uuid"],
                                name=op.f("fk_L3NetworkVO_l2NetworkUuid_L2NetworkVO")),
    )
    op.create_index(op.f("ix_L3NetworkVO_zoneUuid"), "L3NetworkVO", ["zoneUuid"])
    op.create_index(op.f("ix_L3NetworkVO_l2NetworkUuid"), "L3NetworkVO", ["l2NetworkUuid"])
    op.create_index(op.f("ix_L3NetworkVO_name"), "L3NetworkVO", ["name"])

    op.create_table(
        "IpRangeVO",
        *_resource_columns("IpRangeVO"),
        sa.Column("l3NetworkUuid", sa.String(32), nullable=False),
        sa.Column("startIp", sa.String(64), nullable=False),
        sa.Column("endIp", sa.String(64), nullable=False),
        sa.Column("netmask", sa.String(64), nullable=False),
        sa.Column("gateway", sa.String(64), nullable=False),
        sa.Column("networkCidr", sa.String(64), nullable=False),
        sa.Column("ipVersion", sa.Integer(), nullable=False),
        sa.Column("prefixLen", sa.Integer(), nullable=False),
        sa.Column("addressMode", sa.String(64), nullable=True),
        sa.Column("ipRangeType", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["l3NetworkUuid"], ["L3NetworkVO.uuid"],
                                name=op.f("fk_IpRangeVO_l3NetworkUuid_L3NetworkVO")),
    )
    op.create_index(op.f("ix_IpRangeVO_l3NetworkUuid"), "IpRangeVO", ["l3NetworkUuid"])
    op.create_index(op.f("ix_IpRangeVO_name"), "IpRangeVO", ["name"])

    op.create_table(
        "L3NetworkDnsVO",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("l3NetworkUuid", sa.String(32), nullable=False),
        sa.Column("dns", sa.String(255), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_L3NetworkDnsVO")),
        sa.ForeignKeyConstraint(["l3NetworkUuid"], ["L3NetworkVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_L3NetworkDnsVO_l3NetworkUuid_L3NetworkVO")),
        sa.UniqueConstraint("l3NetworkUuid", "dns",
                            name=op.f("uq_L3NetworkDnsVO_l3NetworkUuid_dns")),
    )

    op.create_table(
        "UsedIpVO",
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("ipRangeUuid", sa.String(32), nullable=False),
        sa.Column("l3NetworkUuid", sa.String(32), nullable=False),
        sa.Column("ip", sa.String(128), nullable=False),
        sa.Column("ipInLong", sa.BigInteger(), nullable=False),
        sa.Column("ipVersion", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.String(128), nullable=True),
        sa.Column("netmask", sa.String(128), nullable=True),
        sa.Column("usedFor", sa.String(64), nullable=True),
        sa.Column("vmNicUuid", sa.String(32), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_UsedIpVO")),
        sa.ForeignKeyConstraint(["ipRangeUuid"], ["IpRangeVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_UsedIpVO_ipRangeUuid_IpRangeVO")),
        sa.ForeignKeyConstraint(["l3NetworkUuid"], ["L3NetworkVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_UsedIpVO_l3NetworkUuid_L3NetworkVO")),
        sa.UniqueConstraint("l3NetworkUuid", "ipInLong",
                            name=op.f("uq_UsedIpVO_l3NetworkUuid_ipInLong")),
    )
    op.create_index(op.f("ix_UsedIpVO_ipRangeUuid_ipInLong"), "UsedIpVO",
                    ["ipRangeUuid", "ipInLong"])
    op.create_index(op.f("ix_UsedIpVO_vmNicUuid"), "UsedIpVO", ["vmNicUuid"])

    op.create_table(
        "NetworkServiceProviderVO",
        *_resource_columns("NetworkServiceProviderVO"),
        sa.Column("type", sa.String(255), nullable=False),
        sa.UniqueConstraint("type", name=op.f("uq_NetworkServiceProviderVO_type")),
    )
    op.create_table(
        "NetworkServiceTypeVO",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("networkServiceProviderUuid", sa.String(32), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_NetworkServiceTypeVO")),
        sa.ForeignKeyConstraint(["networkServiceProviderUuid"], ["NetworkServiceProviderVO.uuid"],
                                ondelete="CASCADE", name="fk_NetworkServiceTypeVO_provider"),
        sa.UniqueConstraint(
            "networkServiceProviderUuid", "type",
            name=op.f("uq_NetworkServiceTypeVO_networkServiceProviderUuid_type")),
    )
    op.create_table(
        "NetworkServiceL3NetworkRefVO",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("l3NetworkUuid", sa.String(32), nullable=False),
        sa.Column("networkServiceProviderUuid", sa.String(32), nullable=False),
        sa.Column("networkServiceType", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_NetworkServiceL3NetworkRefVO")),
        sa.ForeignKeyConstraint(
            ["l3NetworkUuid"], ["L3NetworkVO.uuid"], ondelete="CASCADE",
            name=op.f("fk_NetworkServiceL3NetworkRefVO_l3NetworkUuid_L3NetworkVO")),
        sa.ForeignKeyConstraint(["networkServiceProviderUuid"], ["NetworkServiceProviderVO.uuid"],
                                ondelete="CASCADE",
                                name="fk_NetworkServiceL3NetworkRefVO_provider"),
        # The conventional name would exceed PostgreSQL's 63 characters.
        sa.UniqueConstraint("l3NetworkUuid", "networkServiceType",
                            name="uq_NetworkServiceL3NetworkRefVO_l3_type"),
    )
    op.create_index(op.f("ix_NetworkServiceL3NetworkRefVO_networkServiceProviderUuid"),
                    "NetworkServiceL3NetworkRefVO", ["networkServiceProviderUuid"])


def downgrade() -> None:
    for table in ("NetworkServiceL3NetworkRefVO", "NetworkServiceTypeVO",
                  "NetworkServiceProviderVO", "UsedIpVO", "L3NetworkDnsVO", "IpRangeVO",
                  "L3NetworkVO", "L2NetworkClusterRefVO", "L2NetworkVO"):
        op.drop_table(table)
