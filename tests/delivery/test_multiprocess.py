"""Several ``postwatch worker`` processes on one store: every job delivered exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from postwatch.config import Config
from postwatch.store import Database
from postwatch.store.events import fetch_events
from postwatch.store.models import DeliveryJob
from tests.delivery.conftest import submit
from tests.smtpd import SmtpSink

ROOT = Path(__file__).resolve().parents[2]


def write_config(path: Path, db_url: str, sink: SmtpSink, workers: int) -> Path:
    path.write_text(
        f"""
[database]
url = "{db_url}"
[smtp]
host = "127.0.0.1"
port = {sink.port}
sender = "postwatch@hoster.example"
timeout = "5s"
[delivery]
workers = {workers}
poll_interval = "0.1s"
lease = "1m"
retry_base = "1s"
retry_max = "2s"
[[accounts]]
id = "gym"
name = "Sportschool Fit"
[[accounts.forms]]
id = "contact"
recipients = ["info@gym.example", "sales@gym.example"]
fallback = ["owner@private.example"]
""",
        encoding="utf-8",
    )
    return path


def spawn_worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    return subprocess.Popen(
        [sys.executable, "-m", "postwatch", "worker", "--config", str(config)],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=config.parent,
    )


def test_many_processes_one_store_exactly_once(
    tmp_path: Path, db: Database, smtp_sink: SmtpSink
) -> None:
    from postwatch.config import load_config

    cfg_path = write_config(tmp_path / "postwatch.toml", db.url, smtp_sink, workers=3)
    cfg: Config = load_config(cfg_path)
    smtp_sink.set("sales@gym.example", "unknown")  # every submission also goes to a fallback
    total = 40
    # half stored before the workers start (a backlog they race for), half while they run
    sids = [submit(db, cfg, {"email": f"v{i}@example.org"}) for i in range(total // 2)]
    procs = [spawn_worker(cfg_path, tmp_path / f"worker{i}.log") for i in range(4)]
    try:
        sids += [submit(db, cfg, {"email": f"w{i}@example.org"}) for i in range(total // 2)]
        deadline = time.monotonic() + 90
        while True:
            with db.session(readonly=True) as s:
                open_jobs = s.scalar(
                    select(func.count()).select_from(DeliveryJob).where(
                        DeliveryJob.state.not_in(("delivered", "failed")))
                )
                n_jobs = s.scalar(select(func.count()).select_from(DeliveryJob))
            if open_jobs == 0 and n_jobs == total * 3:
                break
            assert all(p.poll() is None for p in procs), "a worker process died"
            assert time.monotonic() < deadline, f"{open_jobs} jobs still open"
            time.sleep(0.2)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in procs]
    assert codes == [0, 0, 0, 0], [(tmp_path / f"worker{i}.log").read_text() for i in range(4)]

    ids = [m.message_id for m in smtp_sink.messages]
    assert len(ids) == 2 * total, "each submission: info@ and the fallback owner@"
    assert len(set(ids)) == len(ids), "a message was sent twice"
    got = {(m.message["X-Postwatch-Submission"], m.rcpt_tos[0]) for m in smtp_sink.messages}
    assert got == {(sid, r) for sid in sids for r in ("info@gym.example", "owner@private.example")}
    sales = [a for a in smtp_sink.attempts if a.recipient == "sales@gym.example"]
    assert len(sales) == total  # the permanent failure was tried exactly once per submission
    with db.session(readonly=True) as s:
        workers = {e.data["worker"].rsplit(":", 2)[0]
                   for e in fetch_events(s, kinds=["delivery_attempt"], limit=None)}
    print(f"deliveries spread over {len(workers)} processes")
