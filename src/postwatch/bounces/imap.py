"""Watch a bounce mailbox over IMAP IDLE: bounces become events as they arrive.

For sites that send through an outside SMTP service, the MTA log is not ours to read; the
bounces come back to an address (the envelope sender) whose mailbox we can watch. Each new
message is read with :func:`postwatch.bounces.parse.analyse`; a failure for a watched mailbox
gives the same events as the log watch (``delivery_failed``, ``mailbox_full`` /
``mailbox_recovered`` through the shared episode rule), any other failed recipient a
``bounce_received`` event for the bounce mailbox's account.

A handled message gets the IMAP keyword ``$PostwatchSeen`` after its events are committed, so a
restart handles each message once, and nothing in the mailbox is moved or deleted.

A message that cannot be read (refused by :func:`~postwatch.bounces.parse.parse_bytes`, or any
error while storing what it says other than the store being unavailable) becomes one
``bounce_unparsable`` event and is marked like any other: one poison message never stalls the
mailbox. Only :class:`~postwatch.store.StoreUnavailable` and IMAP errors mean "reconnect and
read it again".

Config (``[[bounce_mailboxes]]``; see docs/CONFIG.md)::

    [[bounce_mailboxes]]
    account = "gym"
    host = "imap.example.net"
    port = 993
    tls = "tls"                 # tls | starttls | none (loopback only)
    user = "bounces@gym.example"
    password_env = "GYM_BOUNCES_PASSWORD"
    folder = "INBOX"
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from datetime import UTC, datetime
from email.message import Message
from typing import Any

from sqlalchemy.orm import Session

from postwatch import observations
from postwatch.bounces.parse import (
    BounceReport,
    MessageKind,
    UnparsableMessage,
    analyse,
    parse_bytes,
    parse_headers,
)
from postwatch.config import BounceMailboxConfig, Config
from postwatch.observations import Observation, ObservationKind, watched_mailboxes
from postwatch.outbox import Result, Transition, apply_observation, own_domain, own_submission
from postwatch.reasons import Reason, Verdict
from postwatch.services import Backoff
from postwatch.store import Database, StoreUnavailable
from postwatch.store.events import EventKind, record_event

log = logging.getLogger("postwatch.bounces.imap")

KEYWORD = "$PostwatchSeen"


def report_observations(
    report: BounceReport,
    *,
    watched: dict[str, str | None],
    source: str,
    at: datetime,
    evidence: str,
    key: str | None = None,
) -> tuple[list[Observation], list[dict[str, Any]]]:
    """(observations for watched mailboxes, other failures) of one analysed message. ``key``
    (the bounce's own Message-ID) makes the same bounce read twice one observation."""
    watched_obs: list[Observation] = []
    others: list[dict[str, Any]] = []
    if report.kind not in (MessageKind.BOUNCE, MessageKind.DELAY):
        return watched_obs, others
    for f in report.failures:
        data: dict[str, Any] = {
            "mailbox": f.recipient,
            "outcome": "bounced" if f.action == "failed" else "deferred",
            "reason": f.reason,
            "permanent": f.permanent,
            "status": f.status,
            "diagnostic": f.diagnostic,
            "evidence": evidence,
            "source": source,
            "original_message_id": report.original_message_id,
        }
        if key:
            data["key"] = f"dsn:{key}:{(f.recipient or '').lower()}"
        rcpt = (f.recipient or "").lower()
        if rcpt in watched:
            watched_obs.append(Observation(ObservationKind.FAILED, rcpt, watched[rcpt], at, data))
        else:
            others.append(data)
    return watched_obs, others


def store_bounce(
    session: Session,
    config: Config,
    msg: Message,
    *,
    account: str | None,
    source: str,
    evidence: str,
    watched: dict[str, str | None] | None = None,
) -> tuple[BounceReport, list[Transition]]:
    """Everything one message of a bounce mailbox says, in the caller's transaction: events for
    watched mailboxes, ``bounce_received`` for others, and for a bounce of a mail postwatch sent
    (its original Message-ID is one of postwatch's) the outbox kernel's transition
    (:func:`postwatch.outbox.apply_observation`: hold / fail + fallback; a DSN of an older
    hand-over, or one applied before, changes nothing)."""
    report = analyse(msg)
    subject = report.subject or ""
    at = _message_time(msg)
    watched_obs, others = report_observations(
        report,
        watched=watched if watched is not None else watched_mailboxes(config),
        source=source, at=at, evidence=evidence,
        key=str(msg.get("Message-ID") or "").strip() or None,
    )
    done = report_downstream(
        session, config, report, msg, source=source, evidence=evidence, at=at
    )
    # a bounce of postwatch's own mail that changed nothing (seen before, or about an older
    # hand-over) is no new evidence about the mailbox either: no event, no episode
    stale = {
        (f.recipient or "").lower()
        for f, t in zip(report.failures, done, strict=False)
        if t.result in (Result.DUPLICATE, Result.IGNORED)
    }
    observations.record(session, [o for o in watched_obs if o.mailbox not in stale])
    for data in others:
        record_event(session, EventKind.BOUNCE_RECEIVED, account=account, data=data)
    if report.kind in (MessageKind.AUTO_REPLY, MessageKind.FEEDBACK_REPORT):
        record_event(
            session,
            EventKind.BOUNCE_MAILBOX_OTHER,
            account=account,
            data={"kind": str(report.kind), "subject": subject, "source": source},
        )
    return report, done


def report_downstream(
    session: Session,
    config: Config,
    report: BounceReport,
    msg: Message,
    *,
    source: str,
    evidence: str,
    at: datetime,
) -> list[Transition]:
    """Hand each failure of a bounce of postwatch's own mail to the outbox kernel."""
    mid = report.original_message_id
    if report.kind not in (MessageKind.BOUNCE, MessageKind.DELAY) or not mid:
        return []
    if own_submission(mid, own_domain(config)) is None:  # cheap: no store access
        return []
    own_id = str(msg.get("Message-ID") or "").strip() or evidence
    results = []
    for f in report.failures:
        if f.action == "delayed":
            outcome = "deferred"
        elif (f.status or "").startswith("4"):
            outcome = "expired"  # failed after the MTA's retries ran out
        else:
            outcome = "bounced"
        try:
            reason = Reason(f.reason)
        except ValueError:
            reason = Reason.OTHER
        verdict = Verdict(reason, f.permanent or outcome != "deferred", f.status, None)
        text = f"{evidence}: {f.diagnostic or f.status or ''}"[:1000]
        obs = Observation(
            ObservationKind.DOWNSTREAM, (f.recipient or "").lower(), None, at,
            {"message_id": mid, "outcome": outcome, "evidence": text, "source": source,
             "via": "dsn", "key": f"dsn:{own_id}:{(f.recipient or '').lower()}"},
            verdict,
        )
        results.append(apply_observation(session, config, obs))
    return results


def _message_time(msg: Any) -> datetime:
    from email.utils import parsedate_to_datetime

    with contextlib.suppress(Exception):
        dt = parsedate_to_datetime(str(msg.get("Date")))
        if dt is not None:
            return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return datetime.now(UTC)


class BounceMailboxService:
    """IMAP IDLE on one bounce mailbox (imapclient in a worker thread)."""

    def __init__(self, config: Config, db: Database, box: BounceMailboxConfig) -> None:
        self.config = config
        self.db = db
        self.box = box
        self.name = f"bounces:{box.label}"
        self.watched = watched_mailboxes(config)
        self.handled = 0
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once logged in and IDLE-ing (tests)
        self._failing = False

    # ------------------------------------------------------------------------ the session
    def _connect(self) -> Any:
        from imapclient import IMAPClient

        box = self.box
        context = ssl.create_default_context()
        client = IMAPClient(
            box.host, port=box.port, ssl=box.tls == "tls", ssl_context=context, timeout=30
        )
        if box.tls == "starttls":
            client.starttls(context)
        password = box.password.get_secret_value() if box.password else ""
        client.login(box.user, password)
        client.select_folder(box.folder)
        return client

    def handle_new(self, client: Any) -> int:
        """Read every message without our keyword; store its events; mark it. Returns count."""
        uids = client.search(["NOT", "KEYWORD", KEYWORD])
        done = 0
        for i in range(0, len(uids), self.box.batch):
            part = uids[i : i + self.box.batch]
            fetched = client.fetch(part, ["BODY.PEEK[]"])
            for uid in part:
                item = fetched.get(uid)
                raw = item.get(b"BODY[]") if item else None
                if raw is None:
                    continue
                try:
                    self._store_message(uid, raw)
                except StoreUnavailable:
                    raise  # not the message's fault: reconnect and read it again
                except Exception as exc:  # one unreadable message must not stall the mailbox
                    self._store_unparsable(uid, raw, exc)
                client.add_flags([uid], [KEYWORD], silent=True)
                done += 1
        self.handled += done
        return done

    def _store_message(self, uid: int, raw: bytes) -> None:
        msg = parse_bytes(raw)
        subject = str(msg.get("Subject") or "")
        with self.db.session() as s:
            store_bounce(
                s, self.config, msg, account=self.box.account,
                source=f"bounce:{self.box.label}", evidence=f"UID {uid}: {subject}"[:500],
                watched=self.watched,
            )

    def _store_unparsable(self, uid: int, raw: bytes, exc: Exception) -> None:
        """One ``bounce_unparsable`` event naming the message; raises only if the store does."""
        headers = exc.headers if isinstance(exc, UnparsableMessage) else None
        if headers is None:
            try:
                headers = parse_headers(raw)
            except Exception:
                headers = None

        def header(name: str) -> str:
            try:
                value = headers.get(name) if headers is not None else None
            except Exception:
                value = None
            return " ".join(str(value or "").replace("\x00", "").split())[:300]

        error = f"{type(exc).__name__}: {exc}"[:500].replace("\x00", "")
        log.warning("%s: UID %s cannot be read (%s); marked and skipped", self.name, uid, error)
        with self.db.session() as s:
            record_event(
                s, EventKind.BOUNCE_UNPARSABLE, account=self.box.account,
                data={
                    "source": f"bounce:{self.box.label}", "uid": uid, "size": len(raw),
                    "subject": header("Subject"), "from": header("From"),
                    "message_id": header("Message-ID"), "error": error,
                },
            )

    def _outage(self, exc: Exception | None) -> None:
        """One ``bounce_source_failed`` event per outage, ``bounce_source_ok`` when it ends."""
        failing = exc is not None
        if failing == self._failing:
            return
        self._failing = failing
        data: dict[str, Any] = {"source": f"bounce:{self.box.label}"}
        if exc is not None:
            data["error"] = f"{type(exc).__name__}: {exc}"[:500]
        try:
            with self.db.session() as s:
                record_event(
                    s,
                    EventKind.BOUNCE_SOURCE_FAILED if failing else EventKind.BOUNCE_SOURCE_OK,
                    account=self.box.account,
                    data=data,
                )
        except Exception:  # the store being down is logged by whoever needs it
            log.exception("%s: cannot record the source state", self.name)

    def _loop(self) -> None:
        backoff = Backoff(first=1.0, cap=300.0)  # a mail server that is down: no hammering
        while not self._stop.is_set():
            client = None
            try:
                client = self._connect()
                backoff.reset()
                self._outage(None)
                self.handle_new(client)
                while not self._stop.is_set():
                    client.idle()
                    self.ready.set()
                    # wait for a push (EXISTS), the stop flag, or idle_timeout; then look
                    # (looking also after a timeout: a push may have been missed)
                    until = time.monotonic() + self.box.idle_timeout
                    responses: list[Any] = []
                    while not responses and not self._stop.is_set() and time.monotonic() < until:
                        responses = client.idle_check(timeout=1.0)
                    client.idle_done()
                    if not self._stop.is_set():
                        self.handle_new(client)
            except Exception as exc:  # reconnect with backoff; never stop the service
                self.ready.clear()
                if self._stop.is_set():
                    break
                delay = backoff.next()
                log.warning("%s: %s; reconnecting in %.0fs", self.name, exc, delay)
                self._outage(exc)
                self._stop.wait(delay)
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.logout()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop.clear()
        worker = asyncio.create_task(asyncio.to_thread(self._loop))
        try:
            await stop.wait()
        finally:
            self._stop.set()
            await worker


def bounce_mailboxes(config: Config) -> list[BounceMailboxConfig]:
    """``[[bounce_mailboxes]]`` of the config."""
    return list(config.bounce_mailboxes)


def build_bounce_services(config: Config, db: Database) -> list[BounceMailboxService]:
    return [BounceMailboxService(config, db, b) for b in bounce_mailboxes(config)]


__all__ = [
    "KEYWORD",
    "BounceMailboxConfig",
    "BounceMailboxService",
    "build_bounce_services",
    "report_downstream",
    "report_observations",
    "store_bounce",
]
