"""Core tables: submissions, their attachments, the delivery outbox and the event log.

Other rooms add their own tables in ``models_<room>.py`` on the same ``Base`` with their own
Alembic migration (``down_revision = "0001"``); ``Database.migrate()`` upgrades every head.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on both SQLite (which drops the offset) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONType}


class Submission(Base):
    __tablename__ = "submissions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account: Mapped[str] = mapped_column(String(64), index=True)
    form: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    fields: Mapped[dict[str, Any]] = mapped_column(JSONType)
    #: the submitter's e-mail address (lower case) if the form has one; for Reply-To and erasure
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    #: stored | delivered | partial | failed | spam
    status: Mapped[str] = mapped_column(String(16), default="stored")

    jobs: Mapped[list[DeliveryJob]] = relationship(
        back_populates="submission", cascade="all, delete-orphan", passive_deletes=True
    )
    attachments: Mapped[list[Attachment]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        UniqueConstraint("account", "form", "idempotency_key", name="uq_submission_idem"),
        Index("ix_submissions_form_received", "account", "form", "received_at"),
    )


class Attachment(Base):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    submission_id: Mapped[str] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    field: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class DeliveryJob(Base):
    """One e-mail to one recipient: the transactional outbox."""

    __tablename__ = "delivery_jobs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    submission_id: Mapped[str] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    account: Mapped[str] = mapped_column(String(64))
    form: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(320))
    #: primary | fallback
    role: Mapped[str] = mapped_column(String(16), default="primary")
    #: pending | sending | held | delivered | failed | cancelled
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None] = mapped_column()
    message_id: Mapped[str] = mapped_column(String(255))
    last_reply: Mapped[str | None] = mapped_column(Text)
    last_reason: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()
    #: when holding a full mailbox ends (first mailbox-full reply + full_horizon)
    hold_until: Mapped[datetime | None] = mapped_column()

    submission: Mapped[Submission] = relationship(back_populates="jobs")

    __table_args__ = (
        UniqueConstraint("submission_id", "recipient", name="uq_job_recipient"),
        Index("ix_jobs_due", "state", "next_attempt_at"),
    )


class Event(Base):
    """The spine: one typed, timestamped observation. Also the audit trail."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(64))
    account: Mapped[str | None] = mapped_column(String(64))
    mailbox: Mapped[str | None] = mapped_column(String(320))
    form: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    __table_args__ = (
        Index("ix_events_kind_at", "kind", "at"),
        Index("ix_events_account_at", "account", "at"),
    )
