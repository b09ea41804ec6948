"""The core's tables: the common resource table, global configuration and tags.

Revision ID: zcore_0001
Revises:
Create Date: 2024-01-01

Plugins start their own branch on top of this revision (``depends_on = "zcore_0001"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision: str = "zcore_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("zcore",)
depends_on: str | Sequence[str] | None = None


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
    ]


def _tag_columns(table: str) -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("resourceUuid", sa.String(32), nullable=False),
        sa.Column("resourceType", sa.String(255), nullable=False),
        sa.Column("tag", sa.String(2048), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("uuid", name=op.f(f"pk_{table}")),
        sa.ForeignKeyConstraint(
            ["resourceUuid"], ["ResourceVO.uuid"], ondelete="CASCADE",
            name=op.f(f"fk_{table}_resourceUuid_ResourceVO"),
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "ResourceVO",
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("resourceName", sa.String(255), nullable=True),
        sa.Column("resourceType", sa.String(255), nullable=False),
        sa.Column("ownerAccountUuid", sa.String(32), nullable=True),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_ResourceVO")),
    )
    op.create_index(op.f("ix_ResourceVO_resourceType"), "ResourceVO", ["resourceType"])
    op.create_index(op.f("ix_ResourceVO_ownerAccountUuid"), "ResourceVO", ["ownerAccountUuid"])

    op.create_table(
        "GlobalConfigVO",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("defaultValue", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_GlobalConfigVO")),
        sa.UniqueConstraint("category", "name", name=op.f("uq_GlobalConfigVO_category_name")),
    )

    op.create_table(
        "SystemTagVO",
        *_tag_columns("SystemTagVO"),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("inherent", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "UserTagVO",
        *_tag_columns("UserTagVO"),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("tagPatternUuid", sa.String(32), nullable=True),
    )
    for table in ("SystemTagVO", "UserTagVO"):
        op.create_index(op.f(f"ix_{table}_resourceUuid"), table, ["resourceUuid"])
        op.create_index(op.f(f"ix_{table}_resourceType"), table, ["resourceType"])


def downgrade() -> None:
    for table in ("UserTagVO", "SystemTagVO"):
        op.drop_index(op.f(f"ix_{table}_resourceType"), table_name=table)
        op.drop_index(op.f(f"ix_{table}_resourceUuid"), table_name=table)
        op.drop_table(table)
    op.drop_table("GlobalConfigVO")
    op.drop_index(op.f("ix_ResourceVO_ownerAccountUuid"), table_name="ResourceVO")
    op.drop_index(op.f("ix_ResourceVO_resourceType"), table_name="ResourceVO")
    op.drop_table("ResourceVO")
