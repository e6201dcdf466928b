"""alerts room: alerts, notifications, attempts, state, channel status, silences

Revision ID: alerts_0001
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "alerts_0001"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("fingerprint", sa.String(512), nullable=False),
        sa.Column("open_key", sa.String(512), nullable=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("concern", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(320), nullable=False),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("acked_at", TS, nullable=True),
        sa.Column("acked_by", sa.String(200), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("announced", sa.Boolean(), nullable=False),
        sa.Column("next_reminder_at", TS, nullable=True),
        sa.Column("next_escalation_at", TS, nullable=True),
        sa.Column("first_event", BigId, nullable=True),
        sa.Column("last_event", BigId, nullable=True),
        sa.Column("data", Json, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("open_key", name="uq_alerts_open_key"),
    )
    op.create_index("ix_alerts_fingerprint", "alerts", ["fingerprint"])
    op.create_index("ix_alerts_account", "alerts", ["account"])
    op.create_index("ix_alerts_state", "alerts", ["state", "account"])

    op.create_table(
        "alert_notifications",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("alert_id", BigId, nullable=True),
        sa.Column("account", sa.String(64), nullable=True),
        sa.Column("contact", sa.String(200), nullable=False),
        sa.Column("contact_key", sa.String(320), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("not_before", TS, nullable=False),
        sa.Column("claimed_until", TS, nullable=True),
        sa.Column("rounds", sa.Integer(), nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("channel", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("data", Json, nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alert_notifications_alert_id", "alert_notifications", ["alert_id"])
    op.create_index("ix_alert_notifications_account", "alert_notifications", ["account"])
    op.create_index("ix_alert_notifications_due", "alert_notifications", ["state", "not_before"])

    op.create_table(
        "alert_attempts",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("notification_id", BigId, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("channel_index", sa.Integer(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["notification_id"], ["alert_notifications.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_alert_attempts_notification_id", "alert_attempts", ["notification_id"]
    )

    op.create_table(
        "alert_state",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "alert_channels",
        sa.Column("contact_key", sa.String(320), nullable=False),
        sa.Column("channel_index", sa.Integer(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("last_ok_at", TS, nullable=True),
        sa.Column("last_error_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("contact_key", "channel_index"),
    )
    op.create_table(
        "alert_silences",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("account", sa.String(64), nullable=True),
        sa.Column("concern", sa.String(32), nullable=True),
        sa.Column("subject", sa.String(320), nullable=True),
        sa.Column("starts", TS, nullable=False),
        sa.Column("ends", TS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    for name in (
        "alert_silences",
        "alert_channels",
        "alert_state",
        "alert_attempts",
        "alert_notifications",
        "alerts",
    ):
        op.drop_table(name)
