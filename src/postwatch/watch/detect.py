"""From mail-log lines to watch events, for the watched mailboxes.

A thin layer on the shared parsers (:mod:`postwatch.maillogs`) and their per-message tracker:
:class:`LineProcessor` turns lines into :class:`Observation` s without touching the store, and
:func:`store_observations` writes them into the caller's transaction:

- ``delivery_failed`` for each deferred, bounced, expired or refused delivery to a watched
  mailbox (data: mailbox, reason, permanent, status, evidence = the raw line, source, ...);
- ``mailbox_full`` once at the start of an episode, ``mailbox_recovered`` at the next successful
  delivery (the shared rule in :mod:`postwatch.observations`);
- for an outcome of a mail postwatch itself sent (its Message-ID has postwatch's shape and
  domain, checked without the store), a ``downstream`` observation that
  :func:`store_observations` hands to the outbox kernel
  (:func:`postwatch.outbox.apply_observation`): a bounce after the relay's 250 holds or fails
  the job and sends the lead to the fallback.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta, tzinfo
from typing import Any

from sqlalchemy.orm import Session

from postwatch import observations
from postwatch.config import Config
from postwatch.maillogs import (
    LineParser,
    MailLogRecord,
    MessageTracker,
    RecipientOutcome,
    RecordKind,
    detect_format,
    make_mail_parser,
)
from postwatch.observations import Observation, ObservationKind, watched_mailboxes
from postwatch.outbox import Result, apply_observation, own_submission
from postwatch.reasons import Reason

FAILED_OUTCOMES = ("deferred", "bounced", "expired", "rejected")


class AutoParser:
    """``format = "auto"``: decide from the first lines that say something; syslog until then."""

    def __init__(self, *, year: int | None = None, tz: tzinfo | None = None) -> None:
        self._year, self._tz = year, tz
        self.format: str | None = None
        self._parser: LineParser[MailLogRecord] = make_mail_parser("postfix", year=year, tz=tz)

    def decide(self, lines: list[str]) -> None:
        if self.format is not None or not lines:
            return
        fmt = detect_format(lines)
        if fmt == "unknown":
            return
        self.format = fmt if fmt in ("postfix", "exim", "dovecot") else "postfix"
        if self.format != "postfix":
            self._parser = make_mail_parser(self.format, year=self._year, tz=self._tz)

    @property
    def parser(self) -> LineParser[MailLogRecord]:
        return self._parser


class LineProcessor:
    """Lines of one stream (a file, or syslog from one host) -> observations."""

    def __init__(
        self,
        watched: Mapping[str, str | None],
        *,
        source: str,
        fmt: str = "auto",
        year: int | None = None,
        tz: tzinfo | None = None,
        max_lifetime: timedelta = timedelta(days=6),
        max_open: int = 100_000,
        own_domain: str | None = None,
    ) -> None:
        self.watched = {k.lower(): v for k, v in watched.items()}
        #: the domain of postwatch's own Message-IDs: outcomes of its mails become "downstream"
        self.own_domain = own_domain.lower() if own_domain else None
        self.source = source
        self._auto: AutoParser | None = None
        self._parser: LineParser[MailLogRecord] | None = None
        if fmt == "auto":
            self._auto = AutoParser(year=year, tz=tz)
        else:
            self._parser = make_mail_parser(fmt, year=year, tz=tz)
        self.tracker = MessageTracker(max_lifetime=max_lifetime, max_open=max_open)
        self.lines = 0

    @property
    def parser(self) -> LineParser[MailLogRecord]:
        if self._auto is not None:
            return self._auto.parser
        assert self._parser is not None
        return self._parser

    @property
    def unparsed(self) -> int:
        return self.parser.unparsed

    def feed(self, lines: Iterable[str]) -> list[Observation]:
        if self._auto is not None and self._auto.format is None:
            lines = list(lines)
            self._auto.decide(lines)
        parser = self.parser
        out: list[Observation] = []
        watched = self.watched
        own = self.own_domain
        for line in lines:
            self.lines += 1
            rec = parser.parse(line)
            if rec is None:
                continue
            if rec.kind is RecordKind.QUOTA:
                obs = self._quota(rec)
                if obs is not None:
                    out.append(obs)
                continue
            for item in self.tracker.feed(rec):
                if isinstance(item, RecipientOutcome):
                    mailbox = _watched_address(item, watched)
                    if mailbox is not None:
                        out.append(self._outcome(item, mailbox))
                    if (
                        own is not None
                        and item.message_id is not None
                        and item.outcome != "rejected"
                        and own_submission(item.message_id, own) is not None
                    ):
                        out.append(self._downstream(item))
        return out

    def _quota(self, rec: MailLogRecord) -> Observation | None:
        user = (rec.recipient or "").lower()
        if user not in self.watched:
            return None
        verdict = rec.verdict
        return Observation(
            ObservationKind.FULL,
            user,
            self.watched[user],
            rec.time,
            {
                "mailbox": user,
                "reason": Reason.MAILBOX_FULL.value,
                "permanent": bool(verdict.permanent) if verdict else False,
                "status": verdict.status if verdict else None,
                "evidence": rec.raw,
                "source": self.source,
            },
        )

    def _outcome(self, item: RecipientOutcome, mailbox: str) -> Observation:
        data: dict[str, Any] = {
            "mailbox": mailbox,
            "outcome": item.outcome,
            "evidence": item.evidence,
            "source": self.source,
            "queue_id": item.queue_id,
            "sender": item.sender,
            "relay": item.relay,
            "logged_at": item.time.isoformat(),
            "message_id": item.message_id,
            # the same key as the outbox's event for this line: one attempt, counted once
            "key": observations.evidence_key(self.source, item.evidence),
        }
        if item.outcome == "delivered":
            return Observation(
                ObservationKind.DELIVERED, mailbox, self.watched[mailbox], item.time, data
            )
        verdict = item.verdict
        data.update(
            reason=(verdict.reason.value if verdict else Reason.OTHER.value),
            permanent=(
                bool(verdict.permanent) if verdict else item.outcome in ("bounced", "expired")
            ),
            status=item.dsn or (verdict.status if verdict else None),
            reply=item.reply,
        )
        return Observation(
            ObservationKind.FAILED, mailbox, self.watched[mailbox], item.time, data
        )


    def _downstream(self, item: RecipientOutcome) -> Observation:
        assert item.message_id is not None
        return Observation(
            ObservationKind.DOWNSTREAM,
            (item.recipient or item.delivered_to or "").lower(),
            None,
            item.time,
            {
                "message_id": item.message_id,
                "outcome": item.outcome,
                "evidence": item.evidence,
                "source": self.source,
                "queue_id": item.queue_id,
                "via": "log",
            },
            item.verdict,
        )


def _watched_address(item: RecipientOutcome, watched: Mapping[str, str | None]) -> str | None:
    for addr in (item.recipient, item.delivered_to):
        if addr:
            a = addr.lower()
            if a in watched:
                return a
    return None


def store_observations(
    session: Session, batch: Iterable[Observation], config: Config | None = None
) -> list[str]:
    """Record ``batch`` in the caller's transaction: events and episodes by the shared rule
    (:func:`postwatch.observations.record`), and, when ``config`` is given, the ``downstream``
    ones applied to their jobs by the outbox kernel. Returns the kinds of the events recorded."""
    kinds: list[str] = []
    for obs in batch:
        if obs.kind is not ObservationKind.DOWNSTREAM:
            kinds.extend(observations.record(session, [obs]))
        elif config is not None:
            res = apply_observation(session, config, obs)
            if res.result in (Result.HELD, Result.FAILED, Result.DEFERRED):
                kinds.append("delivery_attempt")
            elif res.result is Result.CONFIRMED:
                kinds.append("delivery_confirmed")
    return kinds


__all__ = [
    "AutoParser",
    "LineProcessor",
    "Observation",
    "ObservationKind",
    "store_observations",
    "watched_mailboxes",
]
