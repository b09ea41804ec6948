"""The identity tables: accounts and sessions.

Revision ID: identity_0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision = "identity_0001"
down_revision = None
branch_labels = ("identity",)
depends_on = "zcore_0001"


def upgrade() -> None:
    op.create_table(
        "AccountVO",
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.String(2048), nullable=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("password", sa.String(255), nullable=False),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_AccountVO")),
        sa.ForeignKeyConstraint(["uuid"], ["ResourceVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_AccountVO_uuid_ResourceVO")),
        sa.UniqueConstraint("name", name=op.f("uq_AccountVO_name")),
    )
    op.create_table(
        "SessionVO",
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("accountUuid", sa.String(32), nullable=False),
        sa.Column("userUuid", sa.String(32), nullable=False),
        sa.Column("userType", sa.String(64), nullable=False),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("expiredDate", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_SessionVO")),
        sa.ForeignKeyConstraint(["accountUuid"], ["AccountVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_SessionVO_accountUuid_AccountVO")),
    )
    op.create_index(op.f("ix_SessionVO_accountUuid"), "SessionVO", ["accountUuid"])
    op.create_index(op.f("ix_SessionVO_expiredDate"), "SessionVO", ["expiredDate"])


def downgrade() -> None:
    op.drop_table("SessionVO")
    op.drop_table("AccountVO")
