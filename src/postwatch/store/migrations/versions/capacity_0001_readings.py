"""capacity: readings history and condition state

Revision ID: capacity_0001
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "capacity_0001"
down_revision = "0001"
branch_labels = ("capacity",)
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "capacity_readings",
        sa.Column("id", _PK, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("account", sa.String(64), nullable=True),
        sa.Column("subject", sa.String(16), nullable=False),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("used_bytes", sa.BigInteger(), nullable=True),
        sa.Column("limit_bytes", sa.BigInteger(), nullable=True),
        sa.Column("messages", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("details", _JSON, nullable=True),
    )
    op.create_index(
        "ix_capacity_readings_subject", "capacity_readings", ["subject", "name", "at"]
    )
    op.create_table(
        "capacity_state",
        sa.Column("subject", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(1024), primary_key=True),
        sa.Column("account", sa.String(64), nullable=True),
        sa.Column("level", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("full", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("forecast", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("failing", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("percent", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("capacity_state")
    op.drop_index("ix_capacity_readings_subject", table_name="capacity_readings")
    op.drop_table("capacity_readings")
