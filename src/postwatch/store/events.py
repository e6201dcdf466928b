"""The event log: record and read typed, timestamped observations.

Event kinds are the closed vocabulary :class:`EventKind` (``submission_stored``,
``delivery_attempt``, ``mailbox_full``, ``quota_warning``, ``notification_sent``...). ``data`` is
a JSON object; it must never hold secrets. Readers that follow the log (detectors, alerts)
page by ``id``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from postwatch.store.models import Event, utcnow


class EventKind(StrEnum):
    """Every kind of event postwatch records (docs/EVENTS.md describes each; a test keeps the
    two in step). A StrEnum is a ``str``: ``EventKind.MAILBOX_FULL == "mailbox_full"``, and
    the ``kind`` column stores the plain text."""

    # intake
    SUBMISSION_STORED = "submission_stored"
    SPAM_BLOCKED = "spam_blocked"
    SUBMISSION_THROTTLED = "submission_throttled"
    SUBMISSION_RELEASED = "submission_released"
    SUBMISSIONS_PURGED = "submissions_purged"
    # delivery
    DELIVERY_ATTEMPT = "delivery_attempt"
    DELIVERY_HELD = "delivery_held"
    DELIVERY_FALLBACK = "delivery_fallback"
    DELIVERY_EXPIRED = "delivery_expired"
    DELIVERY_CONFIRMED = "delivery_confirmed"
    # the watch (mail logs, syslog) and the bounce reader
    DELIVERY_FAILED = "delivery_failed"
    MAILBOX_FULL = "mailbox_full"
    MAILBOX_RECOVERED = "mailbox_recovered"
    BOUNCE_RECEIVED = "bounce_received"
    BOUNCE_MAILBOX_OTHER = "bounce_mailbox_other"
    BOUNCE_SOURCE_FAILED = "bounce_source_failed"
    BOUNCE_SOURCE_OK = "bounce_source_ok"
    BOUNCE_UNPARSABLE = "bounce_unparsable"
    # capacity
    QUOTA_WARNING = "quota_warning"
    QUOTA_FULL = "quota_full"
    QUOTA_OK = "quota_ok"
    FORECAST_FULL = "forecast_full"
    QUOTA_SOURCE_FAILED = "quota_source_failed"
    HOOK_TEST = "hook_test"
    # alerts
    ALERT_FIRED = "alert_fired"
    ALERT_ESCALATED = "alert_escalated"
    ALERT_ACKNOWLEDGED = "alert_acknowledged"
    ALERT_RESOLVED = "alert_resolved"
    NOTIFICATION_SENT = "notification_sent"
    NOTIFICATION_FAILED = "notification_failed"


def record_event(
    session: Session,
    kind: EventKind,
    *,
    account: str | None,
    data: dict[str, Any] | None = None,
    mailbox: str | None = None,
    form: str | None = None,
    at: datetime | None = None,
) -> Event:
    """Add an event to the caller's transaction; it is stored when the caller commits.

    ``kind`` is an :class:`EventKind`; it is stored as its plain text."""
    ev = Event(
        kind=str(kind),
        account=account,
        mailbox=mailbox.lower() if mailbox else None,
        form=form,
        data=dict(data or {}),
        at=at or utcnow(),
    )
    session.add(ev)
    return ev


def fetch_events(
    session: Session,
    *,
    kinds: Iterable[str] | None = None,
    account: str | None = None,
    mailbox: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int | None = None,
    limit: int | None = 1000,
    newest_first: bool = False,
) -> Sequence[Event]:
    """Events matching every filter given, oldest first (or newest first)."""
    q = select(Event)
    kinds = list(kinds) if kinds is not None else None
    if kinds:
        q = q.where(Event.kind.in_(kinds))
    if account is not None:
        q = q.where(Event.account == account)
    if mailbox is not None:
        q = q.where(Event.mailbox == mailbox.lower())
    if since is not None:
        q = q.where(Event.at >= since)
    if until is not None:
        q = q.where(Event.at < until)
    if after_id is not None:
        q = q.where(Event.id > after_id)
    q = q.order_by(Event.id.desc() if newest_first else Event.id)
    if limit is not None:
        q = q.limit(limit)
    return session.scalars(q).all()


def last_event_id(session: Session) -> int:
    """The id of the newest event (0 when there is none): a cursor to follow from."""
    from sqlalchemy import func

    return int(session.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0)


def event_dict(ev: Event) -> dict[str, Any]:
    """The JSON shape of an event (``postwatch events --json``, the API)."""
    return {
        "id": ev.id,
        "at": ev.at.isoformat(),
        "kind": ev.kind,
        "account": ev.account,
        "mailbox": ev.mailbox,
        "form": ev.form,
        "data": ev.data,
    }


def delete_events_before(session: Session, before: datetime, kinds: Iterable[str]) -> int:
    res = session.execute(delete(Event).where(Event.at < before, Event.kind.in_(list(kinds))))
    return int(getattr(res, "rowcount", 0) or 0)
