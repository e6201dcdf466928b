"""Fixtures of the alerts tests: a real webhook sink, a real SMTP server, a gym with contacts."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiosmtpd.controller import Controller

from postwatch.alerts.clock import ManualClock
from postwatch.alerts.engine import Engine
from postwatch.config import Config
from postwatch.store import Database
from tests.conftest import make_config


class WebhookSink:
    """An HTTP server on a free loopback port that keeps every request it gets."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_paths: set[str] = set()
        #: requests to these paths wait until ``release`` is set (a channel that hangs)
        self.hang_paths: set[str] = set()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.arrived = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ctype = self.headers.get("Content-Type", "")
                body: Any
                if "json" in ctype:
                    body = json.loads(raw or b"{}")
                else:
                    body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                with sink._lock:
                    sink.requests.append(
                        {"path": self.path, "body": body, "headers": dict(self.headers)}
                    )
                sink.arrived.set()
                if self.path in sink.hang_paths:
                    sink.release.wait(30)
                code = 500 if self.path in sink.fail_paths else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, scheme: str = "json") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def to(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"] == "/" + path.lstrip("/")]

    def titles(self, path: str) -> list[str]:
        return [str(r["body"].get("title")) for r in self.to(path)]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.messages.append(
                    (envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
                )
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def url(self, to: str, sender: str = "postwatch@hoster.example") -> str:
        return f"mailto://127.0.0.1:{self.port}?to={to}&from={sender}"

    def rcpts(self) -> list[str]:
        return [r for _f, rs, _c in self.messages for r in rs]


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    s = WebhookSink()
    yield s
    s.close()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    s = SmtpSink()
    yield s
    s.controller.stop()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def gym_config(
    tmp_path: Path,
    sink: WebhookSink,
    *,
    owner_channels: list[str] | None = None,
    contacts: list[dict[str, Any]] | None = None,
    responsibilities: dict[str, list[str]] | None = None,
    site_name: str | None = None,
    **alerts: Any,
) -> Config:
    """The gym of the issues, with contacts whose channels point at the sink."""
    if contacts is None:
        contacts = [
            {
                "name": "Marieke",
                "role": "owner",
                "language": "nl",
                "channels": owner_channels or [sink.url("owner")],
                "timezone": "Europe/Amsterdam",
            },
            {"name": "Webbureau", "role": "webmaster", "channels": [sink.url("webmaster")]},
            {"name": "Hostingpartner ops", "role": "hoster", "channels": [sink.url("hoster")]},
        ]
    account = {
        "id": "gym",
        "name": "Sportschool Fit",
        "forms": [
            {
                "id": "contact",
                "recipients": ["info@gym.example"],
                "fallback": ["owner@private.example"],
            }
        ],
        "mailboxes": [{"address": "info@gym.example"}, {"address": "sales@gym.example"}],
        "sites": [{"root": str(tmp_path / "www"), "limit_mb": 150}
                  | ({"name": site_name} if site_name else {})],
        "contacts": contacts,
        "responsibilities": responsibilities or {},
    }
    section = {
        "escalate_after": "30m",
        "escalation": ["owner", "webmaster", "hoster"],
        "repeat_every": "4h",
        "digest": "daily 08:00",
        "public_url": "https://postwatch.hoster.example",
        "secret": "test-secret-for-links",
        "retry_after": "1s",
        "send_attempts": 2,
    }
    section.update(alerts)
    return make_config(tmp_path, accounts=[account], alerts=section)


T0 = datetime(2026, 11, 30, 14, 2, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def engine(config: Config, db: Database, clock: ManualClock) -> Engine:
    return Engine(config, db, clock=clock)
