"""Fixtures of the alerts tests: a real webhook sink, a real SMTP server, a gym with contacts."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from postwatch.alerts.clock import ManualClock
from postwatch.alerts.engine import Engine
from postwatch.config import Config
from postwatch.store import Database
from tests.conftest import make_config
from tests.webhooks import WebhookSink


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
