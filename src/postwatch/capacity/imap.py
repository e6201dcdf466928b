"""IMAP quota source: ``GETQUOTAROOT INBOX`` (RFC 2087 / RFC 9208) with imapclient.

STORAGE is in KiB (1024 octets), MESSAGE is a count. Many mailboxes are read concurrently by a
bounded thread pool (one connection per mailbox, closed after the reading).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from postwatch.capacity.sources import QuotaReading, QuotaTarget, failed

KIND = "imap"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate not trusted ({exc.verify_message or exc.reason})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    if isinstance(exc, bytes | bytearray):  # pragma: no cover - defensive
        text = exc.decode(errors="replace")
    return text or type(exc).__name__


class ImapSource:
    kind = KIND

    def __init__(self, *, timeout: float = 20.0, concurrency: int = 32) -> None:
        self.timeout = timeout
        self.concurrency = concurrency

    def read(self, targets: Sequence[QuotaTarget]) -> list[QuotaReading]:
        if len(targets) <= 1:
            return [self.read_one(t) for t in targets]
        workers = min(self.concurrency, len(targets))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imap-quota") as pool:
            return list(pool.map(self.read_one, targets))

    def read_one(self, target: QuotaTarget) -> QuotaReading:
        cfg = target.cfg
        host = cfg.host or "127.0.0.1"
        where = f"imap://{host}:{cfg.port or (993 if cfg.tls == 'tls' else 143)}"
        if cfg.password is None:
            return failed(target, KIND, f"{where}: no password configured for {target.user}")
        port = cfg.port or (993 if cfg.tls == "tls" else 143)
        context = None
        if cfg.tls != "none":
            try:
                context = ssl.create_default_context(
                    cafile=str(cfg.ca_file) if cfg.ca_file else None
                )
            except (OSError, ssl.SSLError) as exc:
                return failed(target, KIND, f"{where}: ca_file {cfg.ca_file}: {_describe(exc)}")
        try:
            client = IMAPClient(
                host, port=port, ssl=cfg.tls == "tls", ssl_context=context, timeout=self.timeout
            )
        except Exception as exc:
            return failed(target, KIND, f"{where}: cannot connect: {_describe(exc)}")
        try:
            if cfg.tls == "starttls":
                client.starttls(context)
            client.login(target.user, cfg.password.get_secret_value())
            _roots, quotas = client.get_quota_root("INBOX")
        except IMAPClientError as exc:
            return failed(target, KIND, f"{where}: {_describe(exc)}")
        except Exception as exc:
            return failed(target, KIND, f"{where}: {_describe(exc)}")
        finally:
            try:
                client.logout()
            except Exception:
                try:
                    client.shutdown()
                except Exception:
                    pass
        reading = QuotaReading(target.account, target.mailbox, KIND)
        for q in quotas:
            res = (q.resource or "").upper()
            if res == "STORAGE":
                reading.used_bytes = int(q.usage) * 1024
                reading.limit_bytes = int(q.limit) * 1024 if q.limit else None
            elif res == "MESSAGE":
                reading.messages = int(q.usage)
                reading.message_limit = int(q.limit) if q.limit else None
        if reading.used_bytes is None:
            return failed(target, KIND, f"{where}: the server reports no STORAGE quota for INBOX")
        return reading
