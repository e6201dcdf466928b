"""The delivery service as ``postwatch serve``/``worker`` run it: polling, wake-up, stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from postwatch.app import run
from postwatch.config import Config
from postwatch.delivery.service import build_services
from postwatch.delivery.worker import DeliveryWorker
from postwatch.outbox.wake import wake
from postwatch.store import Database
from postwatch.store.models import DeliveryJob
from tests.delivery.conftest import delivery_config, jobs, submit
from tests.smtpd import SmtpSink

INFO = "info@gym.example"
OWNER = "owner@private.example"


@asynccontextmanager
async def workers_running(config: Config, db: Database) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(run(config, db, http=False, stop=stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def until(condition: object, timeout: float = 20.0) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(condition):
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_build_services(tmp_path: Path, smtp_sink: SmtpSink, sqlite_db: Database) -> None:
    cfg = delivery_config(tmp_path, smtp_sink, sqlite_db, workers=3)
    services = build_services(cfg, sqlite_db)
    assert [s.name for s in services] == ["delivery-1", "delivery-2", "delivery-3"]
    assert len({s.id for s in services if isinstance(s, DeliveryWorker)}) == 3


async def test_mailbox_full_live_fallback_then_recovery(
    tmp_path: Path, db: Database, smtp_sink: SmtpSink
) -> None:
    """The issue's scenario with real workers: fallback within seconds, info@ once it has room."""
    cfg = delivery_config(tmp_path, smtp_sink, db, full_retry_every="1s")
    smtp_sink.set(INFO, "full552")
    async with workers_running(cfg, db):
        sids = [submit(db, cfg, {"email": f"v{i}@example.org"}) for i in range(5)]
        wake()
        await until(lambda: len(smtp_sink.received_by(OWNER)) == 5, timeout=10)
        assert smtp_sink.received_by(INFO) == []
        smtp_sink.set(INFO, "accept")
        await until(lambda: len(smtp_sink.received_by(INFO)) == 5, timeout=15)
    got = sorted(m.message["X-Postwatch-Submission"] for m in smtp_sink.received_by(INFO))
    assert got == sorted(sids)
    assert len(smtp_sink.received_by(OWNER)) == 5  # the fallback got each once
    assert all(jobs(db, sid)[INFO].state == "delivered" for sid in sids)


async def test_wake_beats_the_poll(
    tmp_path: Path, sqlite_db: Database, smtp_sink: SmtpSink
) -> None:
    cfg = delivery_config(tmp_path, smtp_sink, sqlite_db, poll_interval="10m", workers=1)
    async with workers_running(cfg, sqlite_db):
        await asyncio.sleep(0.3)  # the worker found nothing and sleeps for its 10 minutes
        await asyncio.to_thread(submit, sqlite_db, cfg)
        await asyncio.to_thread(wake)  # as the intake calls it, from a thread
        await until(lambda: len(smtp_sink.messages) == 1, timeout=20)


async def test_stop_finishes_the_send_in_hand(
    tmp_path: Path, db: Database
) -> None:
    with SmtpSink(stall_seconds=1.5) as sink:
        cfg = delivery_config(tmp_path, sink, db, workers=1)
        cfg.smtp.timeout = timedelta(seconds=20)  # slow, but within the client's patience
        sink.set(INFO, "slow")
        sid = submit(db, cfg)
        async with workers_running(cfg, db) as stop:
            wake()
            await until(lambda: _sending(db), timeout=10)
            stop.set()  # SIGTERM while the mail is on the wire
        # the send in hand was finished and its result recorded; nothing left claimed
        assert len(sink.received_by(INFO)) == 1
        job = jobs(db, sid)[INFO]
        assert job.state == "delivered" and job.claimed_by is None


def _sending(db: Database) -> bool:
    with db.session(readonly=True) as s:
        return s.scalar(select(DeliveryJob.id).where(DeliveryJob.state == "sending")) is not None


async def test_stop_releases_claims(
    tmp_path: Path, sqlite_db: Database, smtp_sink: SmtpSink
) -> None:
    cfg = delivery_config(tmp_path, smtp_sink, sqlite_db, workers=2)
    async with workers_running(cfg, sqlite_db):
        await asyncio.sleep(0.2)
    # nothing claimed by a stopped process stays claimed
    with sqlite_db.session(readonly=True) as s:
        assert s.scalar(select(DeliveryJob.id).where(DeliveryJob.claimed_by.is_not(None))) is None


def test_check_config(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    from postwatch.delivery.checks import check

    ok = delivery_config(tmp_path, smtp_sink)
    assert check(ok) == []
    bad = delivery_config(tmp_path, smtp_sink, lease="2s", retry_base="2h",
                          full_retry_every="8d")
    problems = "\n".join(check(bad))
    assert "delivery.lease" in problems and "retry_base" in problems
    assert "full_retry_every" in problems
