"""Retention of capacity readings: full resolution, then one an hour, then nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from postwatch.capacity import service as service_mod
from postwatch.capacity.retention import Pruner, prune_readings
from postwatch.capacity.service import CapacityService
from postwatch.config import ConfigError
from postwatch.store import Database
from postwatch.store.models_capacity import CapacityReading
from tests.capacity.helpers import capacity_config, make_maildir

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
BOX = "info@gym.example"


def reading(at: datetime, used: int | None, *, name: str = BOX, source: str = "imap",
            error: str | None = None) -> dict[str, object]:
    return {"at": at, "account": "gym", "subject": "mailbox", "name": name, "source": source,
            "used_bytes": used, "limit_bytes": 10**9, "messages": None, "error": error,
            "details": None}


def fill(db: Database) -> None:
    rows = []
    # every 10 minutes for 20 days, for two mailboxes
    for i in range(20 * 24 * 6):
        at = NOW - timedelta(minutes=10 * i)
        rows.append(reading(at, 1000 + i))
        rows.append(reading(at, 5000 + i, name="sales@gym.example"))
    # an hour 16 days ago with only failed readings; another where the newest one failed
    old = NOW.replace(minute=0) - timedelta(days=16, hours=3)
    rows += [reading(old + timedelta(minutes=m), None, name="x@gym.example", error="down")
             for m in (5, 25, 45)]
    rows += [reading(old + timedelta(minutes=5), 7, name="y@gym.example"),
             reading(old + timedelta(minutes=50), None, name="y@gym.example", error="down")]
    # a reading from the Dovecot hook in the same hour as imap ones: kept apart (per source)
    rows.append(reading(NOW - timedelta(days=15, minutes=3), 1, source="dovecot_hook"))
    # very old readings
    rows += [reading(NOW - timedelta(days=450, minutes=10 * i), 1) for i in range(10)]
    with db.session() as s:
        s.execute(insert(CapacityReading), rows)


def readings(db: Database, name: str = BOX) -> list[tuple[datetime, str, int | None, str | None]]:
    with db.session(readonly=True) as s:
        return [
            (r.at, r.source, r.used_bytes, r.error)
            for r in s.scalars(
                select(CapacityReading)
                .where(CapacityReading.name == name)
                .order_by(CapacityReading.at)
            )
        ]


def test_readings_are_thinned_beyond_history_full_and_dropped_beyond_keep(
    db: Database, tmp_path: Path
) -> None:
    cfg = capacity_config(tmp_path)  # defaults: 14d full, 1h steps, 400d kept
    fill(db)
    before = readings(db)
    recent_before = [r for r in before if r[0] >= NOW - timedelta(days=14)]

    result = prune_readings(cfg, db, now=NOW)

    after = readings(db)
    assert result.expired == 10
    assert result.thinned > 0
    # full resolution inside the 14 days (what the forecast reads): untouched
    assert [r for r in after if r[0] >= NOW - timedelta(days=14)] == recent_before
    # nothing older than 400 days
    assert min(r[0] for r in after) > NOW - timedelta(days=400)
    # beyond 14 days: one per source and hour, the newest of each hour
    old = [r for r in after if r[0] < NOW - timedelta(days=14)]
    hours = [(r[1], r[0].replace(minute=0, second=0, microsecond=0)) for r in old]
    assert len(hours) == len(set(hours))
    imap_old = [r for r in old if r[1] == "imap"]
    assert all(r[0].minute == 50 for r in imap_old)  # readings at :00..:50: the newest kept
    assert len(imap_old) == 6 * 24  # days 14-20 at one an hour
    assert [r for r in old if r[1] == "dovecot_hook"]
    # a failed hour keeps its newest failure; a good reading beats a newer failure
    assert [(r[2], r[3]) for r in readings(db, "x@gym.example")] == [(None, "down")]
    assert [(r[2], r[3]) for r in readings(db, "y@gym.example")] == [(7, None)]
    # the other mailbox is pruned the same way, independently
    assert len(readings(db, "sales@gym.example")) == len(recent_before) + 6 * 24

    # a second pass (same process or a new one) finds nothing more to do
    assert prune_readings(cfg, db, now=NOW).deleted == 0
    pruner = Pruner(cfg, db)
    assert pruner.run(now=NOW).deleted == 0
    # later, only what became old since is thinned, still one an hour
    later = NOW + timedelta(hours=5)
    # five hours of six readings, two mailboxes: five go each hour
    assert pruner.run(now=later).thinned == 2 * 5 * 5
    old = [r for r in readings(db) if r[0] < later - timedelta(days=14) and r[1] == "imap"]
    hours = [r[0].replace(minute=0, second=0, microsecond=0) for r in old]
    assert len(hours) == len(set(hours))


def test_history_full_never_shorter_than_the_forecast_window(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        capacity_config(tmp_path, history_full="7d")
    assert "history_full" in str(err.value)
    with pytest.raises(ConfigError):
        capacity_config(tmp_path, history_full="30d", forecast_window="30d", history_keep="20d")
    cfg = capacity_config(tmp_path, forecast_window="30d")  # history_full follows the window
    from postwatch.capacity.retention import full_resolution

    assert full_resolution(cfg) == timedelta(days=30)
    cfg = capacity_config(tmp_path, history_full="30d", history_step="1d", history_keep="730d",
                          prune_every="1h")
    assert cfg.capacity.history_step == timedelta(days=1)


async def test_the_service_prunes(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = tmp_path / "vmail" / "info"
    make_maildir(box, {"": [1000]})
    cfg = capacity_config(
        tmp_path,
        mailboxes=[{"address": BOX, "limit_mb": 1, "quota": {"source": "maildir",
                                                              "path": str(box)}}],
        poll_every="1h",
    )
    now = datetime.now(UTC)
    with db.session() as s:
        s.execute(insert(CapacityReading), [reading(now - timedelta(days=500), 1)])
    monkeypatch.setattr(service_mod, "PRUNE_FIRST_AFTER", 0.0)
    svc = CapacityService(cfg, db)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    for _ in range(200):
        if min(r[0] for r in readings(db)) > now - timedelta(days=400):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)
    got = readings(db)
    assert got and min(r[0] for r in got) > now - timedelta(days=400)  # the poll's stays
