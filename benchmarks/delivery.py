"""Delivery throughput: stored submissions -> mails accepted by a local aiosmtpd sink.

Runs ``postwatch worker`` subprocesses (the real service) against SQLite and PostgreSQL, with
1 and 4 workers in one process and 4 processes x 2 workers, and reports mails/s from the first
claim to the last delivery, plus whether every mail arrived exactly once.

    python benchmarks/delivery.py [--mails 400]

Bounded: at most a few minutes on 2 cores. PostgreSQL is skipped when 127.0.0.1:5432 is down.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from sqlalchemy import func, select  # noqa: E402
from tests.smtpd import SmtpSink  # noqa: E402

from postwatch.config import load_config  # noqa: E402
from postwatch.intake.submissions import NewSubmission, add_submission  # noqa: E402
from postwatch.store import Database  # noqa: E402
from postwatch.store.models import DeliveryJob  # noqa: E402


def pg_url() -> tuple[str, str] | None:
    try:
        import psycopg

        admin = psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True,
                                connect_timeout=3)
    except Exception:
        return None
    name = f"pw_bench_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", name


def drop_pg(name: str) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                      (name,))
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def run(db_url: str, sink: SmtpSink, mails: int, procs: int, workers: int, tmp: Path) -> dict:
    cfg_path = tmp / f"bench-{uuid.uuid4().hex[:6]}.toml"
    cfg_path.write_text(f"""
[database]
url = "{db_url}"
[smtp]
host = "127.0.0.1"
port = {sink.port}
sender = "postwatch@hoster.example"
[delivery]
workers = {workers}
poll_interval = "0.05s"
[[accounts]]
id = "gym"
[[accounts.forms]]
id = "contact"
recipients = ["info@gym.example"]
fallback = ["owner@private.example"]
""")
    cfg = load_config(cfg_path)
    db = Database(db_url)
    db.migrate()
    with db.session() as s:
        s.query(DeliveryJob).delete()
    account, form = cfg.form("contact")  # type: ignore[misc]
    with db.session() as s:
        for i in range(mails):
            add_submission(s, cfg, NewSubmission(
                account=account, form=form,
                fields={"name": f"n{i}", "email": f"v{i}@example.org", "message": "x" * 400}))
    before = len(sink.messages)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    t0 = time.monotonic()
    ps = [subprocess.Popen([sys.executable, "-m", "postwatch", "worker", "--config",
                            str(cfg_path)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL) for _ in range(procs)]
    deadline = t0 + 120
    first: float | None = None
    try:
        while len(sink.messages) - before < mails and time.monotonic() < deadline:
            if first is None and len(sink.messages) > before:
                first = time.monotonic()
            time.sleep(0.01)
        end = time.monotonic()
        elapsed = end - t0
        steady = end - (first or t0)
    finally:
        for p in ps:
            p.send_signal(signal.SIGTERM)
        for p in ps:
            p.wait(30)
    got = sink.messages[before:]
    ids = [m.message_id for m in got]
    with db.session(readonly=True) as s:
        delivered = s.scalar(select(func.count()).select_from(DeliveryJob)
                             .where(DeliveryJob.state == "delivered"))
    db.dispose()
    return {"mails": len(got), "unique": len(set(ids)), "delivered_rows": delivered,
            "seconds": elapsed, "steady": steady,
            "rate": (len(got) - 1) / steady if steady else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mails", type=int, default=400)
    args = ap.parse_args()
    layouts = [(1, 1), (1, 4), (4, 2)]
    with tempfile.TemporaryDirectory() as d, SmtpSink() as sink:
        tmp = Path(d)
        stores: list[tuple[str, str, str | None]] = [("sqlite", f"sqlite:///{tmp}/b.db", None)]
        pg = pg_url()
        if pg:
            stores.append(("postgresql", pg[0], pg[1]))
        else:
            print("PostgreSQL not reachable: skipped")
        try:
            print(f"{'store':<11} {'procs':>5} {'workers':>7} {'mails':>6} {'once':>5} "
                  f"{'total s':>8} {'mails/s':>8}  (mails/s: first to last mail; total s:"
                  " with process start-up)")
            for name, url, _ in stores:
                for procs, workers in layouts:
                    r = run(url, sink, args.mails, procs, workers, tmp)
                    once = r["unique"] == r["mails"] == args.mails
                    print(f"{name:<11} {procs:>5} {workers:>7} {r['mails']:>6} "
                          f"{'yes' if once else 'NO':>5} {r['seconds']:>8.2f} {r['rate']:>8.1f}")
        finally:
            for _, _, pgname in stores:
                if pgname:
                    drop_pg(pgname)


if __name__ == "__main__":
    main()
