"""The demo's stand-ins for the world around postwatch, all on 127.0.0.1 and free ports.

- :class:`MailboxServer`: the hoster's mail server, ``final`` for its own domain. Each local
  mailbox has a small quota: a message that does not fit is answered ``552 5.2.2`` at the end of
  DATA (as Dovecot's LMTP does), one that fits is kept and counted. ``empty()`` is the owner
  cleaning up. Mail for other domains is relayed to the fallback server before the 250, so a 250
  always means "arrived". Every outcome is also written as a Postfix-shaped line to ``log_path``,
  which ``postwatch investigate`` reads at the end.
- :class:`FallbackServer`: the owner's private mailbox provider; keeps everything.
- :class:`WebhookReceiver`: the owner's and the hoster's notification endpoints (``json://``).

Guarantees: thread-safe counters (the SMTP handlers run on aiosmtpd's thread, readers on the
demo's); each server stops with ``stop()``. Failure modes: a port taken between choosing and
binding makes ``start()`` raise ``OSError``, which the demo reports.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import json
import smtplib
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

FULL_REPLY = "552 5.2.2 Mailbox full: user is over quota"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Kept:
    """One message a server kept."""

    recipient: str
    submission: str  # X-Postwatch-Submission, "" for mail that did not come from postwatch
    reply_to: str
    fallback_for: str  # X-Postwatch-Fallback-For, "" for a first-hand copy
    subject: str


def _raw(envelope: Envelope) -> bytes:
    content = envelope.content or b""
    return content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content


def _kept(rcpt: str, data: bytes) -> Kept:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return Kept(
        recipient=rcpt.lower(),
        submission=str(msg.get("X-Postwatch-Submission", "")),
        reply_to=str(msg.get("Reply-To", "")),
        fallback_for=str(msg.get("X-Postwatch-Fallback-For", "")),
        subject=str(msg.get("Subject", "")),
    )


class _SmtpServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.kept: list[Kept] = []
        self.lock = threading.Lock()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def snapshot(self) -> list[Kept]:
        with self.lock:
            return list(self.kept)


class FallbackServer(_SmtpServer):
    """The owner's private mailbox provider: accepts and keeps everything."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = _raw(envelope)
        with self.lock:
            self.kept.extend(_kept(str(r), data) for r in envelope.rcpt_tos)
        return "250 2.0.0 Ok: kept"


class MailboxServer(_SmtpServer):
    """The hoster's mail server: final for ``domain``, with a per-mailbox quota in bytes."""

    def __init__(
        self, domain: str, quota_bytes: int, relay_port: int, log_path: Path, hostname: str
    ) -> None:
        super().__init__()
        self.domain = domain.lower()
        self.quota = quota_bytes
        self.relay_port = relay_port
        self.log_path = log_path
        self.hostname = hostname
        self.used: dict[str, int] = {}
        self.refused = 0  # 552 answers given
        self._queue_ids = itertools.count(0xA1B2C3D4E5)
        self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in stop()

    def stop(self) -> None:
        super().stop()
        self._log.close()

    def percent(self, mailbox: str) -> float:
        with self.lock:
            return 100.0 * self.used.get(mailbox.lower(), 0) / self.quota

    def free(self, mailbox: str) -> int:
        """Bytes the mailbox can still take."""
        with self.lock:
            return self.quota - self.used.get(mailbox.lower(), 0)

    def empty(self, mailbox: str) -> None:
        """The owner deletes old mail: the mailbox has room again."""
        with self.lock:
            self.used[mailbox.lower()] = 0

    def _line(self, qid: str, text: str, prog: str) -> None:
        ts = datetime.now(UTC).strftime("%b %d %H:%M:%S")
        self._log.write(f"{ts} {self.hostname} postfix/{prog}: {qid}: {text}\n")
        self._log.flush()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = _raw(envelope)
        msg = email.message_from_bytes(data, policy=email.policy.default)
        qid = f"{next(self._queue_ids):X}"
        sender = envelope.mail_from or ""
        self._line(qid, "client=localhost[127.0.0.1]", "smtpd[2001]")
        self._line(qid, f"message-id={msg.get('Message-ID', '')}", "cleanup[2002]")
        self._line(
            qid, f"from=<{sender}>, size={len(data)}, nrcpt={len(envelope.rcpt_tos)} "
            "(queue active)", "qmgr[900]"
        )
        local = [str(r) for r in envelope.rcpt_tos if str(r).lower().endswith("@" + self.domain)]
        remote = [str(r) for r in envelope.rcpt_tos if str(r) not in local]
        with self.lock:
            full = [r for r in local if self.used.get(r.lower(), 0) + len(data) > self.quota]
            if full:
                self.refused += 1
            else:
                for r in local:
                    self.used[r.lower()] = self.used.get(r.lower(), 0) + len(data)
                    self.kept.append(_kept(r, data))
        for r in local:
            lmtp = f"relay={self.hostname}[private/dovecot-lmtp], delay=0.05, delays=0/0/0/0.05"
            if r in full:
                self._line(
                    qid, f"to=<{r}>, {lmtp}, dsn=5.2.2, status=bounced (host {self.hostname}"
                    f"[private/dovecot-lmtp] said: 552 5.2.2 <{r}> Quota exceeded (mailbox for "
                    "user is full) (in reply to end of DATA command))", "lmtp[2101]"
                )
            else:
                self._line(qid, f"to=<{r}>, {lmtp}, dsn=2.0.0, status=sent (250 2.0.0 <{r}> "
                           "Saved)", "lmtp[2101]")
        if full:
            self._line(qid, "removed", "qmgr[900]")
            return FULL_REPLY
        if remote:
            try:  # in a thread: the other connections go on meanwhile
                await asyncio.to_thread(self._relay, sender, remote, data)
            except (OSError, smtplib.SMTPException) as exc:
                return f"451 4.4.1 relay failed: {type(exc).__name__}"
            for r in remote:
                self._line(
                    qid, f"to=<{r}>, relay=mx.private.example[127.0.0.1]:{self.relay_port}, "
                    "delay=0.1, delays=0/0/0.05/0.05, dsn=2.0.0, status=sent (250 2.0.0 Ok: kept)",
                    "smtp[2201]",
                )
        self._line(qid, "removed", "qmgr[900]")
        return "250 2.0.0 Ok: saved"


    def _relay(self, sender: str, rcpts: list[str], data: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", self.relay_port, timeout=10) as relay:
            relay.sendmail(sender, rcpts, data)


@dataclass(frozen=True)
class Hook:
    """One notification that reached a webhook."""

    path: str
    title: str
    body: str
    at: datetime


class WebhookReceiver:
    """An HTTP server on a free loopback port that keeps every JSON POST it gets."""

    def __init__(self) -> None:
        self.received: list[Hook] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body: Any = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                if not isinstance(body, dict):
                    body = {}
                hook = Hook(self.path, str(body.get("title", "")), str(body.get("message", "")),
                            datetime.now(UTC))
                with receiver._lock:
                    receiver.received.append(hook)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def to(self, path: str) -> list[Hook]:
        with self._lock:
            return [h for h in self.received if h.path == "/" + path]
