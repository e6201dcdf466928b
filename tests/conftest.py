"""Shared pytest fixtures; helpers live in tests/support.py.

``db`` is parametrised: every test that uses it runs on SQLite and on PostgreSQL. Each test
session makes its own PostgreSQL database, so parallel runs on one server do not collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from postwatch.config import Config, config_from_dict
from postwatch.store import Database
from tests.support import require

PG_DSN = os.environ.get("POSTWATCH_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")


def _pg_admin() -> Any:
    import psycopg

    return psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str | None]:
    """A fresh PostgreSQL database for this test session (dropped after), or None."""
    try:
        admin = _pg_admin()
    except Exception:
        yield None
        return
    name = f"pw_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    params = admin.info.get_parameters()
    host = admin.info.host
    port = admin.info.port
    user = params.get("user") or admin.info.user
    try:
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    finally:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def _pg_reset(url: str) -> None:
    from sqlalchemy import create_engine, text

    eng = create_engine(url)
    with eng.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL with an empty schema: SQLite in tmp_path, or the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'postwatch.db'}"
    url = request.getfixturevalue("pg_server_url")
    require(url is not None, "PostgreSQL on 127.0.0.1:5432")
    _pg_reset(url)
    return str(url)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated Database on SQLite and on PostgreSQL."""
    database = Database(db_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'postwatch.db'}")
    database.migrate()
    yield database
    database.dispose()


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    """A small valid config (the gym of the issues); ``overrides`` replace top-level sections."""
    data: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:8025"},
        "database": {"url": f"sqlite:///{tmp_path / 'postwatch.db'}"},
        "smtp": {"host": "127.0.0.1", "port": 2525, "sender": "postwatch@hoster.example"},
        "accounts": [
            {
                "id": "gym",
                "name": "Sportschool Fit",
                "forms": [
                    {
                        "id": "contact",
                        "recipients": ["info@gym.example"],
                        "fallback": ["owner@private.example"],
                        "redirect": "https://gym.example/bedankt",
                    }
                ],
                "mailboxes": [{"address": "info@gym.example"}],
            }
        ],
    }
    data.update(overrides)
    return config_from_dict(data, tmp_path / "postwatch.toml")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)
