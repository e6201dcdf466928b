"""Capacity tables: every quota / space reading (the history the forecast fits), and the
per-subject condition state that makes events fire once per crossing (survives restarts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from postwatch.store.models import Base, BigIntPK, JSONType, utcnow


class CapacityReading(Base):
    """One reading of a mailbox quota or a site's space; a failed reading has ``error`` set."""

    __tablename__ = "capacity_readings"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    account: Mapped[str | None] = mapped_column(String(64))
    #: mailbox | site
    subject: Mapped[str] = mapped_column(String(16))
    #: the mailbox address or the site root
    name: Mapped[str] = mapped_column(String(1024))
    #: imap | doveadm | maildir | scan | dovecot_hook
    source: Mapped[str] = mapped_column(String(32))
    used_bytes: Mapped[int | None] = mapped_column(BigInteger)
    limit_bytes: Mapped[int | None] = mapped_column(BigInteger)
    messages: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    __table_args__ = (Index("ix_capacity_readings_subject", "subject", "name", "at"),)


class CapacityState(Base):
    """What has been said about a subject: the highest warned level, full, forecast-full."""

    __tablename__ = "capacity_state"

    subject: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(1024), primary_key=True)
    account: Mapped[str | None] = mapped_column(String(64))
    level: Mapped[int] = mapped_column(Integer, default=0)
    full: Mapped[bool] = mapped_column(Boolean, default=False)
    forecast: Mapped[bool] = mapped_column(Boolean, default=False)
    failing: Mapped[bool] = mapped_column(Boolean, default=False)
    percent: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
