"""The event log: record and read typed, timestamped observations.

Event kinds are short snake_case words (``submission_stored``, ``delivery_attempt``,
``mailbox_full``, ``quota_warning``, ``notification_sent``...). ``data`` is a JSON object; it must
never hold secrets. Readers that follow the log (detectors, alerts) page by ``id``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from postwatch.store.models import Event, utcnow


def record_event(
    session: Session,
    kind: str,
    *,
    account: str | None,
    data: dict[str, Any] | None = None,
    mailbox: str | None = None,
    form: str | None = None,
    at: datetime | None = None,
) -> Event:
    """Add an event to the caller's transaction; it is stored when the caller commits."""
    ev = Event(
        kind=kind,
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
