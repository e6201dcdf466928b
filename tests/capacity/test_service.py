from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from postwatch.capacity.checks import check
from postwatch.capacity.service import CapacityService, build_services
from postwatch.config import ConfigError
from postwatch.observations import mailbox_full_seen
from postwatch.store import Database
from postwatch.store.events import fetch_events, record_event
from postwatch.store.models_capacity import CapacityReading
from tests.capacity.helpers import capacity_config, make_maildir, write


def test_mailbox_full_events_become_quota_full_once(db: Database, tmp_path: Path) -> None:
    cfg = capacity_config(tmp_path)
    svc = CapacityService(cfg, db)
    with db.session() as s:  # before the service starts: seen by the first poll instead
        record_event(s, "submission_stored", account="gym", data={})
    svc.follow_events()
    with db.session() as s:
        mailbox_full_seen(s, account="gym", mailbox="info@gym.example", data={"reason": "x"})
        record_event(s, "delivery_failed", account="gym", mailbox="info@gym.example", data={})
    svc.follow_events()
    svc.follow_events()
    with db.session(readonly=True) as s:
        full = fetch_events(s, kinds=["quota_full"])
    assert len(full) == 1 and full[0].mailbox == "info@gym.example"
    assert full[0].data["why"] == "mailbox_full delivery event"


async def test_service_polls_and_scans_then_stops(db: Database, tmp_path: Path) -> None:
    box = tmp_path / "vmail" / "info"
    make_maildir(box, {"": [180_000]})
    write(tmp_path / "www" / "wp-content" / "uploads" / "x.jpg", 1000)
    cfg = capacity_config(
        tmp_path,
        mailboxes=[
            {
                "address": "info@gym.example",
                "limit_mb": 0.2,
                "quota": {"source": "maildir", "path": str(box)},
            }
        ],
        sites=[{"root": str(tmp_path / "www"), "limit_mb": 1}],
        poll_every="1h",
    )
    services = build_services(cfg, db)
    assert [s.name for s in services] == ["capacity"]
    stop = asyncio.Event()
    task = asyncio.create_task(services[0].run(stop))
    for _ in range(200):
        with db.session(readonly=True) as s:
            subjects = {r.subject for r in s.query(CapacityReading).all()}
        if subjects == {"mailbox", "site"}:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert subjects == {"mailbox", "site"}
    with db.session(readonly=True) as s:
        warn = fetch_events(s, kinds=["quota_warning"])
    assert [(e.mailbox, e.data["level"]) for e in warn] == [("info@gym.example", 80)]


def test_no_service_without_sources(db: Database, tmp_path: Path) -> None:
    assert build_services(capacity_config(tmp_path), db) == []


def test_check_config_names_the_problems(tmp_path: Path) -> None:
    cfg = capacity_config(
        tmp_path,
        mailboxes=[
            {
                "address": "info@gym.example",
                "quota": {"source": "imap", "host": "127.0.0.1", "user": "info"},
            },
            {
                "address": "shop@gym.example",
                "quota": {"source": "maildir", "path": str(tmp_path / "none")},
            },
            {
                "address": "anna@gym.example",
                "quota": {"source": "doveadm", "doveadm_url": "ftp://x"},
            },
        ],
        sites=[{"root": str(tmp_path / "nosite")}],
    )
    problems = "\n".join(check(cfg))
    assert "mailboxes[info@gym.example].quota: an imap source needs password" in problems
    assert "mailboxes[shop@gym.example].quota.path" in problems
    assert "doveadm_url: must start with http://" in problems
    assert "sites[0].root" in problems


def test_capacity_options_are_validated(tmp_path: Path) -> None:
    assert capacity_config(tmp_path, levels=[95, 80, 80]).capacity.levels == [80, 95]
    with pytest.raises(ConfigError, match="levels must be percentages"):
        capacity_config(tmp_path, levels=[0, 80])
    with pytest.raises(ConfigError, match="hook_token_env: environment variable"):
        capacity_config(tmp_path, hook_token_env="PW_NO_SUCH_VARIABLE_X")


def test_commands_are_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "capacity.md").read_text()
    for command in (
        "postwatch quota",
        "postwatch space",
        "postwatch hook quota-warning",
        "postwatch campaign check",
    ):
        assert command in doc
