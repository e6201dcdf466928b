"""From mail-log lines to watch events, for the watched mailboxes.

A thin layer on the shared parsers (:mod:`postwatch.maillogs`) and their per-message tracker:
:class:`LineProcessor` turns lines into :class:`Observation` s without touching the store, and
:func:`store_observations` writes them into the caller's transaction:

- ``delivery_failed`` for each deferred, bounced, expired or refused delivery to a watched
  mailbox (data: mailbox, reason, permanent, status, evidence = the raw line, source, ...);
- ``mailbox_full`` once at the start of an episode, ``mailbox_recovered`` at the next successful
  delivery (the shared rule in :mod:`postwatch.episodes`);
- for an outcome of a mail postwatch itself sent (its Message-ID has postwatch's shape and
  domain, checked without the store), a ``downstream`` observation that
  :func:`store_observations` hands to the delivery room
  (:func:`postwatch.delivery.outbox.downstream_outcome`): a bounce after the relay's 250 holds
  or fails the job and sends the lead to the fallback.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy.orm import Session

from postwatch import episodes
from postwatch.maillogs import (
    LineParser,
    MailLogRecord,
    MessageTracker,
    RecipientOutcome,
    RecordKind,
    detect_format,
    make_mail_parser,
)
from postwatch.reasons import Reason, Verdict
from postwatch.store.events import record_event

FAILED_OUTCOMES = ("deferred", "bounced", "expired", "rejected")


@dataclass(slots=True)
class Observation:
    """Something the watch saw about one watched mailbox."""

    kind: str  # "failed" | "delivered" | "full" (a mailbox-full line without a delivery)
    #           | "downstream" (an outcome of a mail postwatch sent; mailbox = its recipient)
    mailbox: str
    account: str | None
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    verdict: Verdict | None = None

    @property
    def mailbox_full(self) -> bool:
        return self.kind == "full" or (
            self.kind == "failed" and self.data.get("reason") == Reason.MAILBOX_FULL.value
        )


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
                        and _own_submission(item.message_id, own) is not None
                    ):
                        out.append(self._downstream(item))
        return out

    def _quota(self, rec: MailLogRecord) -> Observation | None:
        user = (rec.recipient or "").lower()
        if user not in self.watched:
            return None
        verdict = rec.verdict
        return Observation(
            "full",
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
        }
        if item.outcome == "delivered":
            return Observation("delivered", mailbox, self.watched[mailbox], item.time, data)
        verdict = item.verdict
        data.update(
            reason=(verdict.reason.value if verdict else Reason.OTHER.value),
            permanent=(
                bool(verdict.permanent) if verdict else item.outcome in ("bounced", "expired")
            ),
            status=item.dsn or (verdict.status if verdict else None),
            reply=item.reply,
        )
        return Observation("failed", mailbox, self.watched[mailbox], item.time, data)


    def _downstream(self, item: RecipientOutcome) -> Observation:
        assert item.message_id is not None
        return Observation(
            "downstream",
            (item.recipient or item.delivered_to or "").lower(),
            None,
            item.time,
            {
                "message_id": item.message_id,
                "outcome": item.outcome,
                "evidence": item.evidence,
                "source": self.source,
                "queue_id": item.queue_id,
            },
            item.verdict,
        )


def _own_submission(message_id: str, domain: str) -> str | None:
    from postwatch.delivery.outbox import own_submission

    return own_submission(message_id, domain)


def _watched_address(item: RecipientOutcome, watched: Mapping[str, str | None]) -> str | None:
    for addr in (item.recipient, item.delivered_to):
        if addr:
            a = addr.lower()
            if a in watched:
                return a
    return None


def store_observations(
    session: Session, observations: Iterable[Observation], config: Any = None
) -> list[str]:
    """Record events for the observations in the caller's transaction; returns event kinds.

    ``downstream`` observations go to the delivery room when ``config`` is given."""
    kinds: list[str] = []
    for obs in observations:
        at = obs.at if obs.at.tzinfo else obs.at.replace(tzinfo=UTC)
        if obs.kind == "downstream":
            if config is not None:
                from postwatch.delivery.outbox import downstream_outcome

                res = downstream_outcome(
                    session, config, message_id=obs.data["message_id"], recipient=obs.mailbox,
                    outcome=obs.data["outcome"], verdict=obs.verdict,
                    evidence=obs.data["evidence"], source=obs.data["source"], at=at,
                    queue_id=obs.data.get("queue_id"),
                )
                if res.result in ("held", "failed", "deferred"):
                    kinds.append("delivery_attempt")
                elif res.result == "confirmed":
                    kinds.append("delivery_confirmed")
            continue
        if obs.kind == "delivered":
            ev = episodes.delivery_succeeded(
                session, account=obs.account, mailbox=obs.mailbox, data=obs.data, at=at
            )
            if ev is not None:
                kinds.append(ev.kind)
            continue
        if obs.mailbox_full:
            ev = episodes.mailbox_full_seen(
                session, account=obs.account, mailbox=obs.mailbox, data=obs.data, at=at
            )
            if ev is not None:
                kinds.append(ev.kind)
        if obs.kind == "failed":
            record_event(
                session,
                "delivery_failed",
                account=obs.account,
                mailbox=obs.mailbox,
                data=obs.data,
                at=at,
            )
            kinds.append("delivery_failed")
    return kinds


def watched_mailboxes(config: Any) -> dict[str, str | None]:
    """address -> account id for every ``[[accounts.mailboxes]]`` of the config."""
    return dict(config.watched_mailboxes())
