"""After ``kill -9`` and a restart, the jobs the dead process had claimed are taken back at
once, not after the lease (issue 10, item 11). A real subprocess claims and is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from postwatch.delivery.worker import DeliveryWorker
from postwatch.outbox import JobState, lease_owner, recover_claims
from postwatch.outbox.jobs import owner_dead
from postwatch.store import Database
from postwatch.store.models import DeliveryJob
from tests.delivery.conftest import delivery_config, submit
from tests.outbox.helpers import INFO
from tests.smtpd import SmtpSink

SRC = str(Path(__file__).resolve().parents[2] / "src")
CLAIMER = """
import sys, time
from datetime import timedelta
from postwatch.outbox import claim, lease_owner
from postwatch.store import Database
db = Database(sys.argv[1])
got = claim(db, lease_owner(1), timedelta(minutes=5), limit=10)
print(len(got), lease_owner(1), flush=True)
time.sleep(600)
"""


def _claim_in_subprocess(db: Database) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", CLAIMER, db.url], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    n, owner = proc.stdout.readline().split()
    assert int(n) >= 1
    return proc, owner


def _states(db: Database) -> dict[str, tuple[str, str | None]]:
    with db.session(readonly=True) as s:
        return {j.recipient: (j.state, j.claimed_by) for j in s.scalars(select(DeliveryJob))}


def test_claims_of_a_killed_process_are_recovered_at_once(tmp_path: Path, db: Database) -> None:
    cfg = delivery_config(tmp_path, 9, db)
    submit(db, cfg)
    proc, owner = _claim_in_subprocess(db)
    try:
        assert _states(db)[INFO] == ("sending", owner)
        assert owner.split(":")[0] == lease_owner(1).split(":")[0]  # same host, same boot
        # alive: its claims are its own
        assert not owner_dead(owner)
        assert recover_claims(db) == 0
        assert _states(db)[INFO] == ("sending", owner)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert owner_dead(owner)
    assert recover_claims(db) == 1
    assert _states(db)[INFO] == (JobState.PENDING, None)


def test_other_hosts_and_earlier_boots(tmp_path: Path) -> None:
    host, boot, pid, tag, n = lease_owner(3).split(":")
    assert n == "3" and int(pid) == os.getpid()
    assert not owner_dead(lease_owner(3))  # this very process
    assert owner_dead(f"{host}:{boot}:{pid}:deadbeef:1")  # this pid, another life (pid 1)
    assert owner_dead(f"{host}:000000000000:{pid}:{tag}:1")  # an earlier boot
    assert not owner_dead(f"elsewhere.example:{boot}:{pid}:{tag}:1")  # not ours to judge
    assert not owner_dead(f"{host}:{pid}:{tag}:1")  # an older format: waits for its lease


def test_restarted_worker_sends_the_dead_workers_job_at_once(
    tmp_path: Path, db: Database
) -> None:
    with SmtpSink() as sink:
        cfg = delivery_config(tmp_path, sink, db)  # lease 30 s: far longer than we wait
        submit(db, cfg)
        proc, _owner = _claim_in_subprocess(db)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

        async def run() -> float:
            stop = asyncio.Event()
            worker = DeliveryWorker(cfg, db)
            task = asyncio.create_task(worker.run(stop))
            start = time.monotonic()
            try:
                while _states(db)[INFO][0] != "delivered":
                    assert time.monotonic() - start < 20, _states(db)
                    await asyncio.sleep(0.1)
                return time.monotonic() - start
            finally:
                stop.set()
                await task

        took = asyncio.run(run())
        assert took < 20  # the lease (30 s) was not waited out
        assert len(sink.received_by(INFO)) == 1
