from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postwatch.capacity import conditions
from postwatch.capacity.conditions import State, evaluate
from postwatch.capacity.core import mailbox_full_signal
from postwatch.capacity.forecast import Forecast
from postwatch.observations import mailbox_full_seen
from postwatch.store import Database
from postwatch.store.events import fetch_events
from tests.capacity.helpers import capacity_config

LEVELS = [80, 90, 95]


def run(
    percents: list[float | None], *, signals: list[bool] | None = None
) -> list[tuple[str, int]]:
    state = State()
    said = []
    for i, p in enumerate(percents):
        res = evaluate(
            state, p, levels=LEVELS, ok_margin=5.0, full_signal=bool(signals and signals[i])
        )
        state = res.state
        said += [(k, d.get("level", 0)) for k, d in res.events]
    return said


@pytest.mark.parametrize(
    ("percents", "expected"),
    [
        ([10, 50, 79.9], []),
        ([10, 81, 82, 85, 81], [("quota_warning", 80)]),
        ([81, 96, 97, 96.5], [("quota_warning", 80), ("quota_warning", 95)]),
        ([70, 96], [("quota_warning", 95)]),  # one event for a jump over several levels
        ([81, 78, 81, 76, 81], [("quota_warning", 80)]),  # inside the margin: no repeat
        ([81, 74, 81], [("quota_warning", 80), ("quota_ok", 0), ("quota_warning", 80)]),
        ([99, 100, 100.5, 99], [("quota_warning", 95), ("quota_full", 100)]),
        ([50, 100, 50], [("quota_full", 100), ("quota_ok", 0)]),
        ([96, 88, 96], [("quota_warning", 95), ("quota_warning", 95)]),  # re-armed 5 under
        ([96, 92, 96], [("quota_warning", 95)]),
    ],
)
def test_one_event_per_crossing(percents: list[float], expected: list[tuple[str, int]]) -> None:
    assert run(percents) == expected


def test_mailbox_full_signal_gives_quota_full_once_below_100() -> None:
    said = run([97, 97, 97, 97], signals=[False, True, True, False])
    assert said == [("quota_warning", 95), ("quota_full", 100)]


def test_forecast_full_once_and_rearmed() -> None:
    st = State()
    kinds = []
    for soon in [True, True, None, False, True]:
        res = evaluate(st, 50, levels=LEVELS, ok_margin=5, forecast_soon=soon)
        st = res.state
        kinds += [k for k, _ in res.events]
    assert kinds == ["forecast_full", "forecast_full"]


def _apply(db: Database, percent: float | None, **kw: object) -> list[str]:
    with db.session() as s:
        evs = conditions.apply(
            s,
            subject="mailbox",
            name="info@gym.example",
            account="gym",
            percent=percent,
            used_bytes=None if percent is None else int(percent * 2048),
            limit_bytes=204800,
            levels=LEVELS,
            ok_margin=5.0,
            **kw,  # type: ignore[arg-type]
        )
        return [e.kind for e in evs]


def test_state_is_stored_and_survives_a_restart(db: Database) -> None:
    assert _apply(db, 85) == ["quota_warning"]
    # a new Database object on the same store: the "restarted" process
    db2 = Database(db.url)
    try:
        assert _apply(db2, 86) == []
        assert _apply(db2, 96) == ["quota_warning"]
        assert _apply(db2, 60) == ["quota_ok"]
    finally:
        db2.dispose()
    with db.session(readonly=True) as s:
        evs = fetch_events(s, account="gym")
    assert [e.kind for e in evs] == ["quota_warning", "quota_warning", "quota_ok"]
    assert evs[1].mailbox == "info@gym.example"
    assert evs[1].data["level"] == 95 and evs[1].data["percent"] == 96
    assert evs[1].data["limit_bytes"] == 204800 and evs[1].data["subject"] == "mailbox"


def test_open_mailbox_full_episode_reads_the_events_table(db: Database, tmp_path: Path) -> None:
    cfg = capacity_config(tmp_path)
    with db.session() as s:
        mailbox_full_seen(s, account="gym", mailbox="info@gym.example", data={"reason": "x"})
    with db.session() as s:
        assert [e.kind for e in mailbox_full_signal(s, cfg, "INFO@gym.example")] == ["quota_full"]
    with db.session() as s:
        assert mailbox_full_signal(s, cfg, "info@gym.example") == []
        assert mailbox_full_signal(s, cfg, "stranger@else.example") == []


def test_forecast_full_event_carries_the_forecast(db: Database) -> None:
    now = datetime.now(UTC)
    fc = Forecast(
        5000.0,
        now + timedelta(hours=10),
        now + timedelta(hours=8),
        now + timedelta(hours=20),
        True,
        50,
        "growing",
    )
    kinds = _apply(db, 50, forecast=fc, horizon=timedelta(hours=72), now=now)
    assert kinds == ["forecast_full"]
    assert _apply(db, 50, forecast=fc, horizon=timedelta(hours=72), now=now) == []
    with db.session(readonly=True) as s:
        ev = fetch_events(s, kinds=["forecast_full"])[0]
    assert ev.data["growth_bytes_per_day"] == 5000.0
    assert ev.data["full_at"] == fc.full_at.isoformat()  # type: ignore[union-attr]


def test_source_failure_is_one_event_until_it_recovers(db: Database) -> None:
    def fail(error: str | None) -> int:
        with db.session() as s:
            ev = conditions.source_result(
                s,
                subject="mailbox",
                name="info@gym.example",
                account="gym",
                source="imap",
                error=error,
            )
            return 0 if ev is None else 1

    assert [fail("refused"), fail("refused"), fail(None), fail("timed out")] == [1, 0, 0, 1]
    with db.session(readonly=True) as s:
        evs = fetch_events(s, kinds=["quota_source_failed"])
    assert [e.data["error"] for e in evs] == ["refused", "timed out"]
    assert evs[0].data["mailbox"] == "info@gym.example" and evs[0].data["source"] == "imap"


def test_many_mailboxes_in_short_batches(db: Database, tmp_path: Path) -> None:
    from postwatch.capacity.core import WRITE_BATCH, store_quota_readings
    from postwatch.capacity.sources import QuotaReading
    from postwatch.store.models_capacity import CapacityReading, CapacityState

    cfg = capacity_config(tmp_path)
    n = WRITE_BATCH * 2 + 50
    readings = [
        QuotaReading(
            "gym",
            f"u{i:04d}@gym.example",
            "doveadm",
            used_bytes=(85 if i % 3 else 10) * 1024,
            limit_bytes=100 * 1024,
        )
        for i in range(n)
    ]
    readings[7] = QuotaReading("gym", "u0007@gym.example", "doveadm", error="user unknown")
    for _ in range(2):
        store_quota_readings(cfg, db, readings)
    with db.session(readonly=True) as s:
        warn = fetch_events(s, kinds=["quota_warning"], limit=None)
        failed = fetch_events(s, kinds=["quota_source_failed"])
        assert s.query(CapacityReading).count() == 2 * n
        assert s.query(CapacityState).count() == n
    assert len(warn) == sum(1 for i in range(n) if i % 3 and i != 7)
    assert len({e.mailbox for e in warn}) == len(warn)
    assert [e.mailbox for e in failed] == ["u0007@gym.example"]
