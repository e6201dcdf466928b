"""Observations: what a mail-log line, a DSN or postwatch's own delivery says about a watched
mailbox, and the one rule that turns them into events and mailbox episodes.

The live watch (:mod:`postwatch.watch.detect`) and the bounce reader
(:mod:`postwatch.bounces.imap`) turn a line or a DSN into an :class:`Observation`;
:func:`record` writes it in the caller's transaction:

- ``failed``: a ``delivery_failed`` event (a deferred, bounced, expired or refused delivery),
  and, when the reason is a full mailbox, the episode rule below;
- ``full``: a mailbox-full line without a delivery (e.g. Dovecot's quota service): episode only;
- ``delivered``: the MTA put a mail into the mailbox: it closes an open episode;
- ``downstream``: an outcome of a mail postwatch itself sent (its Message-ID is postwatch's):
  not an event here; the caller hands it to the outbox kernel
  (:func:`postwatch.outbox.apply_observation`), which holds or fails the job.

**The episode rule** (the only copy; capacity and forensics call it): the first mailbox-full
failure after a success opens an episode (one ``mailbox_full`` event); the next successful
delivery closes it (``mailbox_recovered``, with the number of attempts that failed during it,
each attempt counted once). A 250 from postwatch's own delivery is a success only when the
server is final (``[smtp] final = true``) and has not, during this episode, reported a bounce
after its 250 (then only its log's ``status=sent`` closes the episode): a hand-over is not a
delivery. The state is the event log itself, so several processes agree on it.
:class:`EpisodeTracker` applies the same rule in memory to lines read in time order
(``investigate``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from postwatch.reasons import Reason, Verdict

# The store is imported where it is used: ``investigate`` uses :class:`EpisodeTracker` and
# must start without the database layer (tests/core/test_startup.py).
if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from postwatch.config import Config
    from postwatch.store.models import Event

EPISODE_KINDS = ("mailbox_full", "mailbox_recovered")
#: the same line or DSN seen twice has the same time (to the second)
SAME_TIME = timedelta(seconds=2)


class ObservationKind(StrEnum):
    FAILED = "failed"
    DELIVERED = "delivered"
    FULL = "full"  # a mailbox-full line without a delivery
    DOWNSTREAM = "downstream"  # an outcome of a mail postwatch sent; mailbox = its recipient


@dataclass(slots=True)
class Observation:
    """Something a line or a DSN says about one watched mailbox (or one of postwatch's mails)."""

    kind: ObservationKind
    mailbox: str
    account: str | None
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    verdict: Verdict | None = None

    @property
    def mailbox_full(self) -> bool:
        return self.kind is ObservationKind.FULL or (
            self.kind is ObservationKind.FAILED
            and self.data.get("reason") == Reason.MAILBOX_FULL.value
        )


def record(session: Session, observations: Iterable[Observation]) -> list[str]:
    """Events and episodes for ``observations`` in the caller's transaction; returns the kinds
    of the events recorded. ``downstream`` observations are left to the outbox kernel."""
    from postwatch.store.events import EventKind, record_event

    kinds: list[str] = []
    for obs in observations:
        at = obs.at if obs.at.tzinfo else obs.at.replace(tzinfo=UTC)
        if obs.kind is ObservationKind.DOWNSTREAM:
            continue
        if str(obs.data.get("key") or "").startswith("dsn:") and _seen(session, obs, at):
            continue  # the same DSN again (e.g. a bounce folder applied twice); a log line is
            #           read once (the watch keeps its position), and checking costs a query
        if obs.kind is ObservationKind.DELIVERED:
            ev = delivery_succeeded(
                session, account=obs.account, mailbox=obs.mailbox, data=obs.data, at=at
            )
            if ev is not None:
                kinds.append(ev.kind)
            continue
        if obs.mailbox_full:
            ev = mailbox_full_seen(
                session, account=obs.account, mailbox=obs.mailbox, data=obs.data, at=at
            )
            if ev is not None:
                kinds.append(ev.kind)
        if obs.kind is ObservationKind.FAILED:
            record_event(session, EventKind.DELIVERY_FAILED, account=obs.account,
                         mailbox=obs.mailbox, data=obs.data, at=at)
            kinds.append("delivery_failed")
    return kinds


def watched_mailboxes(config: Config) -> dict[str, str | None]:
    """address -> account id for every ``[[accounts.mailboxes]]`` (``Config``'s one index)."""
    return dict(config.watched_mailboxes())


def _seen(session: Session, obs: Observation, at: datetime) -> bool:
    """Was an observation with the same ``key`` recorded for the mailbox at the same time?"""
    from sqlalchemy import select

    from postwatch.store.models import Event

    rows = session.scalars(
        select(Event).where(
            Event.mailbox == obs.mailbox.lower(),
            Event.kind.in_(("delivery_failed", *EPISODE_KINDS)),
            Event.at >= at - SAME_TIME,
            Event.at <= at + SAME_TIME,
        )
    )
    return any(e.data.get("key") == obs.data["key"] for e in rows)


# --------------------------------------------------------------------------- the episode rule


def _last_episode_event(session: Session, mailbox: str) -> Event | None:
    from sqlalchemy import select

    from postwatch.store.models import Event

    return session.scalar(
        select(Event)
        .where(Event.mailbox == mailbox.lower(), Event.kind.in_(EPISODE_KINDS))
        .order_by(Event.id.desc())
        .limit(1)
    )


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def open_episode(session: Session, mailbox: str) -> Event | None:
    """The ``mailbox_full`` event of the mailbox's open episode, if one is open."""
    last = _last_episode_event(session, mailbox)
    if last is not None and last.kind == "mailbox_full":
        return last
    return None


def open_episodes(session: Session, mailboxes: Sequence[str]) -> set[str]:
    """The mailboxes among ``mailboxes`` with an open episode (one query per 500 mailboxes)."""
    from sqlalchemy import select

    from postwatch.store.models import Event

    last: dict[str, str] = {}
    names = sorted({m.lower() for m in mailboxes})
    for i in range(0, len(names), 500):
        rows = session.execute(
            select(Event.mailbox, Event.kind)
            .where(Event.mailbox.in_(names[i : i + 500]), Event.kind.in_(EPISODE_KINDS))
            .order_by(Event.id)
        ).all()
        for mailbox, kind in rows:
            last[str(mailbox)] = kind
    return {m for m, k in last.items() if k == "mailbox_full"}


def mailbox_full_seen(
    session: Session, *, account: str | None, mailbox: str, data: dict[str, Any],
    at: datetime | None = None,
) -> Event | None:
    """Report a mailbox-full failure; returns the new ``mailbox_full`` event if it opened one.
    A failure dated before the end of the last episode (late evidence, e.g. an old DSN read
    again) opens none."""
    from postwatch.store.events import EventKind, record_event

    last = _last_episode_event(session, mailbox)
    if last is not None and last.kind == "mailbox_full":
        return None
    if last is not None and at is not None and _utc(at) < _utc(last.at):
        return None
    return record_event(
        session, EventKind.MAILBOX_FULL, account=account, mailbox=mailbox, data=data,
        at=at or datetime.now(UTC),
    )


def delivery_succeeded(
    session: Session, *, account: str | None, mailbox: str, data: dict[str, Any],
    at: datetime | None = None,
) -> Event | None:
    """Report a delivery into the mailbox; returns the ``mailbox_recovered`` event if it closed
    an episode."""
    opened = open_episode(session, mailbox)
    if opened is None:
        return None
    return _close(session, opened, account=account, mailbox=mailbox, data=data, at=at)


def handed_over(
    session: Session, *, account: str | None, mailbox: str, final: bool, data: dict[str, Any],
    at: datetime | None = None,
) -> Event | None:
    """Report a 250 to postwatch's own delivery. A relay's 250 (``final`` false) is a hand-over
    and closes nothing; a final server's 250 closes the episode unless that server reported a
    bounce after its 250 during the episode (then its 250s are hand-overs too)."""
    if not final:
        return None
    opened = open_episode(session, mailbox)
    if opened is None or _bounced_after_250(session, opened):
        return None
    return _close(session, opened, account=account, mailbox=mailbox, data=data, at=at)


def _bounced_after_250(session: Session, opened: Event) -> bool:
    """Did the mailbox's server report, since ``opened``, a failure after accepting a mail
    (a log line or DSN other than a refusal at RCPT)?"""
    from sqlalchemy import select

    from postwatch.store.models import Event

    rows = session.scalars(
        select(Event).where(
            Event.mailbox == opened.mailbox,
            Event.kind.in_(("delivery_failed", "delivery_attempt")),
            Event.id >= opened.id,
        )
    )
    for e in rows:
        if e.kind == "delivery_failed" and e.data.get("outcome") not in (None, "rejected"):
            return True
        if e.kind == "delivery_attempt" and e.data.get("stage") == "downstream":
            return True
    return False


def _close(
    session: Session, opened: Event, *, account: str | None, mailbox: str,
    data: dict[str, Any], at: datetime | None,
) -> Event:
    from postwatch.store.events import EventKind, record_event

    body = {"since": opened.at.isoformat(), "failures": failed_attempts(session, opened),
            **data}
    return record_event(
        session, EventKind.MAILBOX_RECOVERED, account=account, mailbox=mailbox, data=body,
        at=at or datetime.now(UTC),
    )


def evidence_key(source: str, evidence: str) -> str:
    """The key of one piece of evidence (a log line from a source): the watch's event for a
    watched mailbox and the outbox's event for the same line carry the same key."""
    return hashlib.sha256(f"{source}\n{evidence}".encode()).hexdigest()[:24]


def count_attempts(events: Iterable[Event]) -> int:
    """How many delivery attempts ``events`` (``delivery_failed`` / ``delivery_attempt``) are
    about, each attempt once: the worker's reply, the log line and the DSN of one attempt are
    one. Events are one attempt when they share the job and attempt number, or the evidence
    ``key`` (the watch's ``delivery_failed`` and the outbox's event of the same line or DSN)."""
    parent: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def find(x: tuple[Any, ...]) -> tuple[Any, ...]:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for e in events:
        d = e.data
        names: list[tuple[Any, ...]] = [("event", e.id)]
        if d.get("job") is not None and d.get("attempt") is not None:
            names.append(("job", d["job"], d["attempt"]))
        if d.get("key"):
            names.append(("key", d["key"]))
        first = find(names[0])
        for other in names[1:]:
            parent[find(other)] = first
    return len({find(x) for x in parent if x[0] == "event"})


def failed_attempts(session: Session, opened: Event) -> int:
    """Failed delivery attempts to the mailbox since ``opened``, each attempt counted once."""
    from sqlalchemy import select

    from postwatch.store.models import Event

    rows = session.scalars(
        select(Event).where(
            Event.mailbox == opened.mailbox,
            Event.kind.in_(("delivery_failed", "delivery_attempt")),
            Event.id >= opened.id,
        )
    )
    return count_attempts(e for e in rows if e.data.get("result") != "delivered")


# --------------------------------------------------------------------------- in memory


@dataclass(slots=True)
class Episode:
    """A run of mailbox-full failures ended by the next successful delivery to the mailbox
    (seen in lines read in time order; ``failures`` counts the failures in it)."""

    start: datetime
    end: datetime
    failures: int
    recovered: datetime | None = None  # the successful delivery that ended it
    first_evidence: str | None = None


class EpisodeTracker:
    """The episode rule over lines read in time order, without a store (``investigate``)."""

    def __init__(self) -> None:
        self.current: Episode | None = None
        self.closed: list[Episode] = []

    def full(self, t: datetime, evidence: str) -> Episode:
        """A mailbox-full failure at ``t``: opens an episode or extends the open one."""
        ep = self.current
        if ep is None:
            ep = self.current = Episode(start=t, end=t, failures=1, first_evidence=evidence)
        else:
            ep.end = max(ep.end, t)
            ep.failures += 1
        return ep

    def success(self, t: datetime) -> Episode | None:
        """A delivery at ``t``: closes the open episode (if it is not older than its last
        failure); returns the episode it closed."""
        ep = self.current
        if ep is None or t < ep.end:
            return None
        ep.recovered = t
        self.closed.append(ep)
        self.current = None
        return ep

    def close(self) -> list[Episode]:
        """Every episode, the one still open last (without ``recovered``), by start."""
        if self.current is not None:
            self.closed.append(self.current)
            self.current = None
        self.closed.sort(key=lambda e: e.start)
        return self.closed
