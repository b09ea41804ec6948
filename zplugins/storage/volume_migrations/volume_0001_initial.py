"""Volumes, volume snapshots and the image cache.

Revision ID: volume_0001
Revises: 
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision = "volume_0001"
down_revision = None
branch_labels = ("volume",)
depends_on = ("zcore_0001", "compute_0003", "storage_0001", "image")

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "VolumeVO",
        sa.Column("primaryStorageUuid", sa.String(32), nullable=True),
        sa.Column("vmInstanceUuid", sa.String(32), nullable=True),
        sa.Column("lastVmInstanceUuid", sa.String(32), nullable=True),
        sa.Column("diskOfferingUuid", sa.String(32), nullable=True),
        sa.Column("rootImageUuid", sa.String(32), nullable=True),
        sa.Column("installPath", sa.String(2048), nullable=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("format", sa.String(64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("actualSize", sa.BigInteger(), nullable=True),
        sa.Column("deviceId", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("isShareable", sa.Boolean(), nullable=False),
        sa.Column("lastAttachDate", UTCDateTime(), nullable=True),
        sa.Column("lastDetachDate", UTCDateTime(), nullable=True),
        sa.Column("volumeQos", sa.String(255), nullable=True),
        sa.Column("protocol", sa.String(64), nullable=True),
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.String(2048), nullable=True),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_VolumeVO")),
        sa.ForeignKeyConstraint(["primaryStorageUuid"], ["PrimaryStorageVO.uuid"],
                                name=op.f("fk_VolumeVO_primaryStorageUuid_PrimaryStorageVO")),
        sa.ForeignKeyConstraint(["uuid"], ["ResourceVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_VolumeVO_uuid_ResourceVO")),
        sa.ForeignKeyConstraint(["vmInstanceUuid"], ["VmInstanceVO.uuid"],
                                name=op.f("fk_VolumeVO_vmInstanceUuid_VmInstanceVO")),
    )
    op.create_index(op.f("ix_VolumeVO_name"), "VolumeVO", ["name"])
    op.create_index(op.f("ix_VolumeVO_primaryStorageUuid"), "VolumeVO", ["primaryStorageUuid"])
    op.create_index(op.f("ix_VolumeVO_status"), "VolumeVO", ["status"])
    op.create_index(op.f("ix_VolumeVO_vmInstanceUuid"), "VolumeVO", ["vmInstanceUuid"])

    op.create_table(
        "VolumeSnapshotTreeVO",
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("volumeUuid", sa.String(32), nullable=False),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_VolumeSnapshotTreeVO")),
        sa.ForeignKeyConstraint(["volumeUuid"], ["VolumeVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_VolumeSnapshotTreeVO_volumeUuid_VolumeVO")),
    )
    op.create_index(op.f("ix_VolumeSnapshotTreeVO_volumeUuid"), "VolumeSnapshotTreeVO", ["volumeUuid"])

    op.create_table(
        "VolumeSnapshotVO",
        sa.Column("volumeUuid", sa.String(32), nullable=True),
        sa.Column("treeUuid", sa.String(32), nullable=False),
        sa.Column("parentUuid", sa.String(32), nullable=True),
        sa.Column("primaryStorageUuid", sa.String(32), nullable=True),
        sa.Column("primaryStorageInstallPath", sa.String(2048), nullable=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("volumeType", sa.String(64), nullable=False),
        sa.Column("format", sa.String(64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("latest", sa.Boolean(), nullable=False),
        sa.Column("distance", sa.Integer(), nullable=False),
        sa.Column("groupUuid", sa.String(32), nullable=True),
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.String(2048), nullable=True),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_VolumeSnapshotVO")),
        sa.ForeignKeyConstraint(["volumeUuid"], ["VolumeVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_VolumeSnapshotVO_volumeUuid_VolumeVO")),
        sa.ForeignKeyConstraint(["uuid"], ["ResourceVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_VolumeSnapshotVO_uuid_ResourceVO")),
        sa.ForeignKeyConstraint(["treeUuid"], ["VolumeSnapshotTreeVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_VolumeSnapshotVO_treeUuid_VolumeSnapshotTreeVO")),
    )
    op.create_index(op.f("ix_VolumeSnapshotVO_parentUuid"), "VolumeSnapshotVO", ["parentUuid"])
    op.create_index(op.f("ix_VolumeSnapshotVO_treeUuid"), "VolumeSnapshotVO", ["treeUuid"])
    op.create_index(op.f("ix_VolumeSnapshotVO_volumeUuid"), "VolumeSnapshotVO", ["volumeUuid"])

    op.create_table(
        "ImageCacheVO",
        sa.Column("id", _ID, nullable=False, autoincrement=True),
        sa.Column("primaryStorageUuid", sa.String(32), nullable=False),
        sa.Column("imageUuid", sa.String(32), nullable=True),
        sa.Column("installUrl", sa.String(2048), nullable=False),
        sa.Column("mediaType", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("md5sum", sa.String(255), nullable=True),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ImageCacheVO")),
        sa.ForeignKeyConstraint(["primaryStorageUuid"], ["PrimaryStorageVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_ImageCacheVO_primaryStorageUuid_PrimaryStorageVO")),
        sa.UniqueConstraint("primaryStorageUuid", "imageUuid", name=op.f("uq_ImageCacheVO_primaryStorageUuid_imageUuid")),
    )
    op.create_index(op.f("ix_ImageCacheVO_imageUuid"), "ImageCacheVO", ["imageUuid"])


def downgrade() -> None:
    op.drop_table("ImageCacheVO")
    op.drop_table("VolumeSnapshotVO")
    op.drop_table("VolumeSnapshotTreeVO")
    op.drop_table("VolumeVO")
