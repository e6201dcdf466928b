"""Mailbox episodes: the shared rule for ``mailbox_full`` / ``mailbox_recovered`` events.

Whoever sees a delivery to a watched mailbox fail or succeed (postwatch's own delivery worker,
the live MTA-log watch, a bounce reader) reports it here, in the caller's transaction. The first
mailbox-full failure after a success opens an episode (``mailbox_full`` event, once); the next
successful delivery closes it (``mailbox_recovered``, with the number of failures seen). The
state is the event log itself, so several processes agree on it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from postwatch.store.events import record_event
from postwatch.store.models import Event, utcnow

EPISODE_KINDS = ("mailbox_full", "mailbox_recovered")


def open_episode(session: Session, mailbox: str) -> Event | None:
    """The ``mailbox_full`` event of the mailbox's open episode, if one is open."""
    last = session.scalar(
        select(Event)
        .where(Event.mailbox == mailbox.lower(), Event.kind.in_(EPISODE_KINDS))
        .order_by(Event.id.desc())
        .limit(1)
    )
    if last is not None and last.kind == "mailbox_full":
        return last
    return None


def mailbox_full_seen(
    session: Session,
    *,
    account: str | None,
    mailbox: str,
    data: dict[str, Any],
    at: datetime | None = None,
) -> Event | None:
    """Report a mailbox-full failure; returns the new ``mailbox_full`` event if it opened one."""
    if open_episode(session, mailbox) is not None:
        return None
    return record_event(
        session, "mailbox_full", account=account, mailbox=mailbox, data=data, at=at or utcnow()
    )


def delivery_succeeded(
    session: Session,
    *,
    account: str | None,
    mailbox: str,
    data: dict[str, Any],
    at: datetime | None = None,
) -> Event | None:
    """Report a successful delivery; returns the ``mailbox_recovered`` event if it closed one."""
    opened = open_episode(session, mailbox)
    if opened is None:
        return None
    failures = session.scalar(
        select(func.count())
        .select_from(Event)
        .where(
            Event.mailbox == mailbox.lower(),
            Event.kind.in_(("delivery_failed", "delivery_attempt")),
            Event.id >= opened.id,
        )
    )
    body = {"since": opened.at.isoformat(), "failures": int(failures or 0), **data}
    return record_event(
        session, "mailbox_recovered", account=account, mailbox=mailbox, data=body, at=at or utcnow()
    )
