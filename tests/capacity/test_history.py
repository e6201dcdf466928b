"""History -> forecast -> forecast_full and the growth/full_at columns of ``postwatch quota``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from postwatch.capacity.core import quota_rows, store_quota_readings
from postwatch.capacity.sources import QuotaReading, targets_from_config
from postwatch.store import Database
from postwatch.store.events import fetch_events
from postwatch.store.models_capacity import CapacityReading
from tests.capacity.helpers import capacity_config

KB = 1024
LIMIT = 200 * KB


def test_growth_gives_forecast_full_and_time_until_full(db: Database, tmp_path: Path) -> None:
    box = "info@gym.example"
    cfg = capacity_config(
        tmp_path,
        mailboxes=[{"address": box, "quota": {"source": "maildir", "path": str(tmp_path)}}],
    )
    now = datetime.now(UTC)
    with db.session() as s:  # a day of history: 4 KB an hour, one deletion of 30 KB midway
        for h in range(24, 0, -1):
            used = 40 * KB + (24 - h) * 4 * KB - (30 * KB if h < 12 else 0)
            s.add(
                CapacityReading(
                    at=now - timedelta(hours=h),
                    account="gym",
                    subject="mailbox",
                    name=box,
                    source="maildir",
                    used_bytes=used,
                    limit_bytes=LIMIT,
                )
            )
    reading = QuotaReading(
        "gym", box, "maildir", used_bytes=110 * KB, limit_bytes=LIMIT, read_at=now
    )
    store_quota_readings(cfg, db, [reading])
    with db.session(readonly=True) as s:
        evs = fetch_events(s, kinds=["forecast_full"])
        rows = quota_rows(cfg, s, targets_from_config(cfg), now=now)
    assert len(evs) == 1 and evs[0].mailbox == box
    growth = evs[0].data["growth_bytes_per_day"]
    assert abs(growth - 96 * KB) < 10 * KB  # 4 KB/h, the deletion ignored
    full_at = datetime.fromisoformat(evs[0].data["full_at"])
    assert now + timedelta(hours=20) < full_at < now + timedelta(hours=26)  # 90 KB left
    row = rows[0]
    assert row["forecast"] == "growing" and row["full_at"] is not None
    assert abs(row["growth_bytes_per_day"] - growth) < 5 * KB
    lo, hi = row["full_at_range"]
    assert lo is not None and lo <= row["full_at"] and (hi is None or row["full_at"] <= hi)
    # the next reading does not repeat it
    store_quota_readings(
        cfg, db, [QuotaReading("gym", box, "maildir", used_bytes=111 * KB, limit_bytes=LIMIT)]
    )
    with db.session(readonly=True) as s:
        assert len(fetch_events(s, kinds=["forecast_full"])) == 1
