"""Watch a bounce mailbox over IMAP IDLE: bounces become events as they arrive.

For sites that send through an outside SMTP service, the MTA log is not ours to read; the
bounces come back to an address (the envelope sender) whose mailbox we can watch. Each new
message is read with :func:`postwatch.bounces.parse.analyse`; a failure for a watched mailbox
gives the same events as the log watch (``delivery_failed``, ``mailbox_full`` /
``mailbox_recovered`` through the shared episode rule), any other failed recipient a
``bounce_received`` event for the bounce mailbox's account.

A handled message gets the IMAP keyword ``$PostwatchSeen`` after its events are committed, so a
restart handles each message once, and nothing in the mailbox is moved or deleted.

Config (``[[bounce_mailboxes]]``; see docs/config/watch.md)::

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
from typing import Any

from postwatch.bounces.parse import BounceReport, MessageKind, analyse, parse_bytes
from postwatch.config import BounceMailboxConfig, Config
from postwatch.store import Database
from postwatch.store.events import record_event
from postwatch.watch.detect import Observation, store_observations, watched_mailboxes

log = logging.getLogger("postwatch.bounces.imap")

KEYWORD = "$PostwatchSeen"


def report_observations(
    report: BounceReport,
    *,
    watched: dict[str, str | None],
    source: str,
    at: datetime,
    evidence: str,
) -> tuple[list[Observation], list[dict[str, Any]]]:
    """(observations for watched mailboxes, other failures) of one analysed message."""
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
        rcpt = (f.recipient or "").lower()
        if rcpt in watched:
            watched_obs.append(Observation("failed", rcpt, watched[rcpt], at, data))
        else:
            others.append(data)
    return watched_obs, others


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
                self._store_message(uid, raw)
                client.add_flags([uid], [KEYWORD], silent=True)
                done += 1
        self.handled += done
        return done

    def _store_message(self, uid: int, raw: bytes) -> None:
        msg = parse_bytes(raw)
        report = analyse(msg)
        source = f"bounce:{self.box.label}"
        subject = report.subject or ""
        evidence = f"UID {uid}: {subject}"[:500]
        watched_obs, others = report_observations(
            report, watched=self.watched, source=source, at=_message_time(msg), evidence=evidence
        )
        with self.db.session() as s:
            store_observations(s, watched_obs)
            for data in others:
                record_event(s, "bounce_received", account=self.box.account, data=data)
            if report.kind in (
                MessageKind.AUTO_REPLY,
                MessageKind.FEEDBACK_REPORT,
            ):
                record_event(
                    s,
                    "bounce_mailbox_other",
                    account=self.box.account,
                    data={"kind": str(report.kind), "subject": subject, "source": source},
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
                    "bounce_source_failed" if failing else "bounce_source_ok",
                    account=self.box.account,
                    data=data,
                )
        except Exception:  # the store being down is logged by whoever needs it
            log.exception("%s: cannot record the source state", self.name)

    def _loop(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            client = None
            try:
                client = self._connect()
                delay = 1.0
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
                log.warning("%s: %s; reconnecting in %.0fs", self.name, exc, delay)
                self._outage(exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 300.0)
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
    "report_observations",
]
