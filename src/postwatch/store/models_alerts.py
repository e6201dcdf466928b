"""Tables of the alerts room: alerts, notifications (an outbox), attempts, state, channels.

- ``alerts``: one row per alert; ``open_key`` holds the fingerprint while the alert is open and
  is NULL once resolved, so a unique index keeps one open alert per fingerprint, even with
  several postwatch processes on one PostgreSQL.
- ``alert_notifications``: one message to one contact (start, reminder, escalation, resolved,
  digest). Written in the same transaction as the alert change that causes it, sent afterwards;
  a restart finds unsent rows and sends them.
- ``alert_attempts``: every try on one channel (masked URL, result, error): the record.
- ``alert_state``: small key/value rows (the event cursor, digest times, the link secret).
- ``alert_channels``: last result per contact channel, shown by ``postwatch alerts channels``.
- ``alert_silences``: silences made with ``postwatch alerts silence``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from postwatch.store.models import Base, BigIntPK, JSONType, utcnow


class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(512), index=True)
    open_key: Mapped[str | None] = mapped_column(String(512), unique=True)
    account: Mapped[str] = mapped_column(String(64), index=True)
    concern: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(320))
    rule: Mapped[str] = mapped_column(String(32))
    #: critical | warning | low (low goes to digests only)
    severity: Mapped[str] = mapped_column(String(16))
    #: firing | acknowledged | resolved
    state: Mapped[str] = mapped_column(String(16), default="firing")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column()
    acked_at: Mapped[datetime | None] = mapped_column()
    acked_by: Mapped[str | None] = mapped_column(String(200))
    #: how many events were grouped into this alert
    count: Mapped[int] = mapped_column(Integer, default=1)
    #: escalation level reached (0 = the roles responsible for the concern)
    level: Mapped[int] = mapped_column(Integer, default=0)
    #: True once the start notification went out (it waits while silenced or inhibited)
    announced: Mapped[bool] = mapped_column(default=False)
    next_reminder_at: Mapped[datetime | None] = mapped_column()
    next_escalation_at: Mapped[datetime | None] = mapped_column()
    first_event: Mapped[int | None] = mapped_column(BigIntPK)
    last_event: Mapped[int | None] = mapped_column(BigIntPK)
    #: the latest facts (reason, status, evidence, percent, full_at...), never secrets
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    __table_args__ = (Index("ix_alerts_state", "state", "account"),)


class AlertNotification(Base):
    __tablename__ = "alert_notifications"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    alert_id: Mapped[int | None] = mapped_column(
        ForeignKey("alerts.id", ondelete="CASCADE"), index=True
    )
    account: Mapped[str | None] = mapped_column(String(64), index=True)
    contact: Mapped[str] = mapped_column(String(200))
    #: stable id of the contact (account/name, or e-mail when given): digests group on it
    contact_key: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(64))
    #: fired | reminder | escalated | resolved | digest
    kind: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(8))
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    #: pending | sending | sent | failed | cancelled
    state: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    not_before: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column()
    rounds: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column()
    #: masked URL of the channel that took it
    channel: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    #: alert ids summarised in a digest
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    __table_args__ = (Index("ix_alert_notifications_due", "state", "not_before"),)


class AlertAttempt(Base):
    __tablename__ = "alert_attempts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(
        ForeignKey("alert_notifications.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(default=utcnow)
    channel_index: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(Text)
    #: sent | failed | skipped
    result: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)


class AlertState(Base):
    __tablename__ = "alert_state"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class AlertChannel(Base):
    __tablename__ = "alert_channels"

    contact_key: Mapped[str] = mapped_column(String(320), primary_key=True)
    channel_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(Text)
    last_ok_at: Mapped[datetime | None] = mapped_column()
    last_error_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    #: failures in a row (0 after a success)
    failures: Mapped[int] = mapped_column(Integer, default=0)


class AlertSilence(Base):
    __tablename__ = "alert_silences"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account: Mapped[str | None] = mapped_column(String(64))
    concern: Mapped[str | None] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(String(320))
    starts: Mapped[datetime] = mapped_column(default=utcnow)
    ends: Mapped[datetime] = mapped_column()
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(String(200))
