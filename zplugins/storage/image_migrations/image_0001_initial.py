"""Backup storage, its zones, images and their copies on backup storage.

Revision ID: image_0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision = "image_0001"
down_revision = None
branch_labels = ("image",)
depends_on = ("zcore_0001", "compute")


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


def _ref_columns(table: str) -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f(f"pk_{table}")),
    ]


def upgrade() -> None:
    op.create_table(
        "BackupStorageVO",
        *_resource_columns("BackupStorageVO"),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("totalCapacity", sa.BigInteger(), nullable=False),
        sa.Column("availableCapacity", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
    )
    op.create_index(op.f("ix_BackupStorageVO_name"), "BackupStorageVO", ["name"])
    op.create_index(op.f("ix_BackupStorageVO_availableCapacity"), "BackupStorageVO",
                    ["availableCapacity"])

    op.create_table(
        "BackupStorageZoneRefVO",
        *_ref_columns("BackupStorageZoneRefVO"),
        sa.Column("backupStorageUuid", sa.String(32), nullable=False),
        sa.Column("zoneUuid", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(["backupStorageUuid"], ["BackupStorageVO.uuid"],
                                ondelete="CASCADE",
                                name=op.f("fk_BackupStorageZoneRefVO_backupStorageUuid_"
                                          "BackupStorageVO")),
        sa.ForeignKeyConstraint(["zoneUuid"], ["ZoneVO.uuid"],
                                name=op.f("fk_BackupStorageZoneRefVO_zoneUuid_ZoneVO")),
        sa.UniqueConstraint("backupStorageUuid", "zoneUuid",
                            name=op.f("uq_BackupStorageZoneRefVO_backupStorageUuid_zoneUuid")),
    )
    op.create_index(op.f("ix_BackupStorageZoneRefVO_zoneUuid"), "BackupStorageZoneRefVO",
                    ["zoneUuid"])

    op.create_table(
        "ImageVO",
        *_resource_columns("ImageVO"),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("actualSize", sa.BigInteger(), nullable=False),
        sa.Column("md5Sum", sa.String(255), nullable=True),
        sa.Column("url", sa.String(1024), nullable=False),
        sa.Column("mediaType", sa.String(64), nullable=False),
        sa.Column("guestOsType", sa.String(255), nullable=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("platform", sa.String(64), nullable=True),
        sa.Column("format", sa.String(64), nullable=False),
        sa.Column("system", sa.Boolean(), nullable=False),
        sa.Column("architecture", sa.String(32), nullable=True),
        sa.Column("virtio", sa.Boolean(), nullable=False),
    )
    op.create_index(op.f("ix_ImageVO_name"), "ImageVO", ["name"])
    op.create_index(op.f("ix_ImageVO_status"), "ImageVO", ["status"])

    op.create_table(
        "ImageBackupStorageRefVO",
        *_ref_columns("ImageBackupStorageRefVO"),
        sa.Column("imageUuid", sa.String(32), nullable=False),
        sa.Column("backupStorageUuid", sa.String(32), nullable=False),
        sa.Column("installPath", sa.String(2048), nullable=True),
        sa.Column("exportUrl", sa.String(2048), nullable=True),
        sa.Column("exportMd5Sum", sa.String(255), nullable=True),
        sa.Column("status", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["imageUuid"], ["ImageVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_ImageBackupStorageRefVO_imageUuid_ImageVO")),
        sa.ForeignKeyConstraint(["backupStorageUuid"], ["BackupStorageVO.uuid"],
                                name=op.f("fk_ImageBackupStorageRefVO_backupStorageUuid_"
                                          "BackupStorageVO")),
        sa.UniqueConstraint("imageUuid", "backupStorageUuid",
                            name=op.f("uq_ImageBackupStorageRefVO_imageUuid_"
                                      "backupStorageUuid")),
    )
    op.create_index(op.f("ix_ImageBackupStorageRefVO_backupStorageUuid"),
                    "ImageBackupStorageRefVO", ["backupStorageUuid"])


def downgrade() -> None:
    op.drop_table("ImageBackupStorageRefVO")
    op.drop_table("ImageVO")
    op.drop_table("BackupStorageZoneRefVO")
    op.drop_table("BackupStorageVO")
