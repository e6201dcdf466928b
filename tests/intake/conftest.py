"""Fixtures of the intake tests: an app on the ``db`` fixture (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from postwatch.app import create_app
from postwatch.config import Config
from postwatch.store import Database
from postwatch.store.models import DeliveryJob, Event, Submission
from tests.conftest import make_config

GYM: dict[str, Any] = {
    "id": "gym",
    "name": "Sportschool Fit",
    "forms": [
        {
            "id": "contact",
            "recipients": ["info@gym.example", "sales@gym.example"],
            "fallback": ["owner@private.example"],
            "redirect": "https://gym.example/bedankt",
        },
        {
            "id": "signup",
            "recipients": ["info@gym.example"],
            "allowed_origins": ["https://gym.example", "www.gym.example"],
            "honeypot_field": "website",
        },
        {"id": "shared", "recipients": ["info@gym.example"]},
    ],
}
BAKERY: dict[str, Any] = {
    "id": "bakery",
    "forms": [{"id": "shared", "recipients": ["hello@bakery.example"], "retention_days": 30}],
}


def intake_config(tmp_path: Path, db: Database, **intake: Any) -> Config:
    settings: dict[str, Any] = {"rate_limit": 0}
    settings.update(intake)
    return make_config(
        tmp_path,
        database={"url": db.url},
        intake=settings,
        accounts=[GYM, BAKERY],
        server={"listen": "127.0.0.1:8025", "trusted_proxies": ["10.0.0.0/8"]},
    )


@pytest.fixture
def cfg(tmp_path: Path, db: Database) -> Config:
    return intake_config(tmp_path, db)


ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def client(cfg: Config, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(cfg, db) as c:
        yield c


def app_client(cfg: Config, db: Database, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    app = create_app(cfg, db)
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://postwatch.test")


def count(db: Database, model: Any, *where: Any) -> int:
    with db.session(readonly=True) as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def submission(db: Database, sid: str) -> Submission:
    with db.session(readonly=True) as s:
        sub = s.get(Submission, sid)
        assert sub is not None, f"submission {sid} not stored"
        s.expunge(sub)
        return sub


def jobs(db: Database, sid: str) -> list[DeliveryJob]:
    with db.session(readonly=True) as s:
        rows = list(s.scalars(select(DeliveryJob).where(DeliveryJob.submission_id == sid)))
        for r in rows:
            s.expunge(r)
        return rows


def events(db: Database, kind: str) -> list[Event]:
    with db.session(readonly=True) as s:
        rows = list(s.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))
        for r in rows:
            s.expunge(r)
        return rows
