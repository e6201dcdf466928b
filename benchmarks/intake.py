"""Benchmark: durable form intake of a real ``postwatch serve`` over loopback.

    python benchmarks/intake.py [--clients 64] [--seconds 10] [--repeat 3] [--no-pg]

For each store (SQLite in a temporary folder on the disk of --dir, and PostgreSQL on
127.0.0.1:5432 in a database of its own) it starts ``postwatch serve``, drives ``POST /f/contact``
with N concurrent keep-alive clients for a bounded time and count, and reports durable
submissions/s (only 201 replies count; each one was committed and fsync'd before it was sent)
and p50/p99 latency. Then it stops the server and counts the rows: every acknowledged id must
be in the store with its delivery jobs. Beside it, the raw rate of single-row fsync'd SQLite
commits (WAL, synchronous=FULL, one INSERT per transaction) is measured on the same disk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PG_ADMIN = os.environ.get(
    "POSTWATCH_BENCH_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- raw SQLite


def raw_sqlite_rate(folder: Path, seconds: float, max_rows: int) -> tuple[float, float, float]:
    """Single-row INSERT + COMMIT, WAL, synchronous=FULL: the fsync'd commit rate of this disk.

    Returns (commits/s, p50 ms, p99 ms) of one writer committing one row at a time.
    """
    path = folder / "raw.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, at TEXT, data TEXT)")
    payload = json.dumps({"name": "Anna", "email": "anna@example.org", "msg": "x" * 200})
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_rows and time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO t (at, data) VALUES (datetime('now'), ?)", (payload,))
        con.execute("COMMIT")
        times.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    con.close()
    q = statistics.quantiles(times, n=100)
    return len(times) / elapsed, q[49] * 1000, q[98] * 1000


# --------------------------------------------------------------------------- the server


def write_config(folder: Path, db_url: str, port: int, smtp_port: int) -> Path:
    cfg = folder / "postwatch.toml"
    cfg.write_text(
        f"""[server]
listen = "127.0.0.1:{port}"
[database]
url = "{db_url}"
[smtp]
host = "127.0.0.1"
port = {smtp_port}
sender = "postwatch@hoster.example"
timeout = "60s"                 # delivery.lease (5m) >= 4 x timeout: check-config
[intake]
rate_limit = 0
[[accounts]]
id = "gym"
[[accounts.forms]]
id = "contact"
recipients = ["info@gym.example"]
fallback = ["owner@private.example"]
redirect = "https://gym.example/bedankt"
""",
        encoding="utf-8",
    )
    return cfg


# The server is `postwatch serve` itself (since the composition root serves /f/ on the intake's
# fast path and the CLI runs the loop on uvloop). This prelude only watches SQLite's write lock:
# for every write transaction (BEGIN IMMEDIATE .. COMMIT) the time waited for the lock and the
# time it was held, by who held it (classified by the first table written), dumped at exit.
LOCK_WATCH = """
import atexit, json, os, threading, time
from sqlalchemy import event
from sqlalchemy.engine import Engine
_tl = threading.local()
_rec = {"wait": {}, "hold": {}}
_ROOMS = (("alert", "alerts"), ("submission", "intake"), ("attachment", "intake"),
          ("delivery", "delivery"), ("capacity", "capacity"), ("event", "events"))
def _who(sql):
    low = sql.lower()
    for key, name in _ROOMS:
        if key in low:
            return name
    return "other"
@event.listens_for(Engine, "before_cursor_execute")
def _before(conn, cur, sql, params, ctx, many):
    if sql.startswith("BEGIN IMMEDIATE"):
        _tl.w0 = time.perf_counter()
@event.listens_for(Engine, "after_cursor_execute")
def _after(conn, cur, sql, params, ctx, many):
    if sql.startswith("BEGIN IMMEDIATE"):
        _tl.t0 = time.perf_counter()
        _tl.who = None
        thread = "intake writer" if "intake-writer" in threading.current_thread().name else "other"
        _rec["wait"].setdefault(thread, []).append(_tl.t0 - _tl.w0)
    elif getattr(_tl, "t0", None) is not None and _tl.who is None and sql.lstrip()[:6].upper() in (
            "INSERT", "UPDATE", "DELETE"):
        _tl.who = _who(sql[:200])
def _end(conn):
    t0 = getattr(_tl, "t0", None)
    if t0 is not None:
        _rec["hold"].setdefault(_tl.who or "read only", []).append(time.perf_counter() - t0)
        _tl.t0 = None
event.listen(Engine, "commit", _end)
event.listen(Engine, "rollback", _end)
def _dump():
    with open(os.environ["PW_BENCH_LOCKS"], "w") as fh:
        json.dump(_rec, fh)
atexit.register(_dump)
from postwatch.cli import main
main()
"""


def start_server(cfg: Path, port: int, lock_file: Path | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    if lock_file is not None:
        env["PW_BENCH_LOCKS"] = str(lock_file)
        cmd = [sys.executable, "-c", LOCK_WATCH, "serve", "--config", str(cfg)]
    else:
        cmd = [sys.executable, "-m", "postwatch", "serve", "--config", str(cfg)]
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=cfg.parent,
        stdout=subprocess.DEVNULL,
        stderr=open(cfg.parent / "serve.log", "wb"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"postwatch serve exited: {(cfg.parent / 'serve.log').read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("postwatch serve did not start")


def lock_summary(files: list[Path]) -> dict[str, dict[str, float]]:
    """{"hold alerts": {n, p99_ms, max_ms, total_ms}, "wait intake writer": {...}, ...}"""
    merged: dict[str, list[float]] = {}
    for f in files:
        if not f.exists():
            continue
        data = json.loads(f.read_text())
        for kind, by in data.items():
            for who, xs in by.items():
                merged.setdefault(f"{kind} {who}", []).extend(xs)
    out: dict[str, dict[str, float]] = {}
    for key, xs in sorted(merged.items()):
        xs.sort()
        p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
        out[key] = {
            "n": len(xs),
            "p99_ms": p99 * 1000,
            "max_ms": xs[-1] * 1000,
            "total_ms": sum(xs) * 1000,
        }
    return out


# --------------------------------------------------------------------------- the clients


async def _client(
    port: int,
    until: float,
    budget: list[int],
    latencies: list[float],
    ids: list[str],
    failures: list[str],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while budget[0] > 0 and time.perf_counter() < until:
            budget[0] -= 1
            body = (
                f"name=Anna+{uuid.uuid4().hex[:6]}&email=anna%40example.org"
                "&msg=Ik+wil+graag+een+proefles&_idempotency_key=" + uuid.uuid4().hex
            ).encode()
            req = (
                b"POST /f/contact HTTP/1.1\r\nHost: bench\r\nAccept: application/json\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            payload = await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            status = int(head[9:12])
            if status == 201:
                ids.append(json.loads(payload)["id"])
            else:
                failures.append(f"{status} {payload[:200]!r}")
    finally:
        writer.close()


async def drive(
    ports: list[int], clients: int, seconds: float, max_requests: int
) -> dict[str, float]:
    """``clients`` connections spread round-robin over the servers' ports (the balancer)."""
    # warm up (not counted): imports, connection pools, page cache
    await asyncio.gather(
        *(
            _client(ports[i % len(ports)], time.perf_counter() + 1.0, [20], [], [], [])
            for i in range(8)
        )
    )
    latencies: list[float] = []
    ids: list[str] = []
    failures: list[str] = []
    budget = [max_requests]
    cpu0 = time.process_time()
    start = time.perf_counter()
    until = start + seconds
    await asyncio.gather(
        *(
            _client(ports[i % len(ports)], until, budget, latencies, ids, failures)
            for i in range(clients)
        )
    )
    elapsed = time.perf_counter() - start
    client_cpu = time.process_time() - cpu0
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "stored": len(ids),
        "failures": len(failures),
        "first_failure": failures[0] if failures else "",  # type: ignore[dict-item]
        "rate": len(ids) / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": latencies[-1] * 1000,
        "seconds": elapsed,
        "client_cpu": client_cpu / elapsed,
        "ids": ids,  # type: ignore[dict-item]
    }


def count_rows(db_url: str, ids: list[str]) -> tuple[int, int, int]:
    """(submissions, of them acknowledged and present, delivery jobs) after the run."""
    sys.path.insert(0, str(SRC))
    from sqlalchemy import func, select

    from postwatch.store import Database
    from postwatch.store.models import DeliveryJob, Submission

    db = Database(db_url)
    try:
        with db.session(readonly=True) as s:
            total = int(s.scalar(select(func.count()).select_from(Submission)) or 0)
            jobs = int(s.scalar(select(func.count()).select_from(DeliveryJob)) or 0)
            present = 0
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                present += int(s.scalar(select(func.count()).where(Submission.id.in_(chunk))) or 0)
    finally:
        db.dispose()
    return total, present, jobs


def smtp_stand_in(mode: str) -> tuple[socket.socket | None, int]:
    """What the delivery workers of ``postwatch serve`` talk to during the run.

    ``stall``: a socket that listens but never answers, so the workers sit in their first
    connection and the run measures the intake alone. ``refuse``: a closed port, so every job
    fails at once and is retried: the workers then write as fast as the intake does (SQLite has
    one write lock for both).
    """
    if mode == "refuse":
        return None, free_port()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock, int(sock.getsockname()[1])


def avg_batch(ports: list[int]) -> float:
    """Mean submissions per commit, from the servers' ``postwatch_intake_batch_size``."""
    import urllib.request

    total = count = 0.0
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("postwatch_intake_batch_size_sum"):
                    total += float(line.split()[-1])
                elif line.startswith("postwatch_intake_batch_size_count"):
                    count += float(line.split()[-1])
    return total / count if count else 0.0


def run_store(name: str, db_url: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    ports: list[int] = []
    smtp_sock, smtp_port = smtp_stand_in(args.smtp)
    procs: list[subprocess.Popen[bytes]] = []
    lock_files: list[Path] = []
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        for i in range(args.processes):
            port = free_port()
            sub = folder / f"p{i}"
            sub.mkdir()
            cfg = write_config(sub, db_url, port, smtp_port)
            lock_file = None
            if name == "sqlite" and not args.no_lock_stats:
                lock_file = sub / "locks.json"
                lock_files.append(lock_file)
            procs.append(start_server(cfg, port, lock_file))
            ports.append(port)
        work = drive(ports, args.clients, args.seconds, args.max_requests)
        res: dict[str, Any]
        if loop_factory is not None:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                res = dict(runner.run(work))
        else:
            res = dict(asyncio.run(work))
        res["avg_batch"] = avg_batch(ports)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        if smtp_sock is not None:
            smtp_sock.close()  # resets the stalled SMTP connections: the workers can stop
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    ids = list(res.pop("ids"))
    total, present, jobs = count_rows(db_url, ids)
    res.update({"store": name, "rows": total, "acked_present": present, "jobs": jobs})
    res["lost"] = len(ids) - present
    res["locks"] = lock_summary(lock_files)
    return res


def load() -> str:
    """The machine's load average now (1, 5, 15 min), as `uptime` shows it."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def one_round(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Raw rate, then each store once; prints as it goes."""
    load_before = load()
    raw, raw_p50, raw_p99 = raw_sqlite_rate(folder, args.raw_seconds, 1_000_000)
    print(
        f"raw SQLite single-row fsync'd commits (WAL, synchronous=FULL): {raw:,.0f}/s "
        f"(one commit: p50 {raw_p50:.2f} ms, p99 {raw_p99:.2f} ms)"
    )
    (folder / "raw.db").unlink(missing_ok=True)
    results: list[dict[str, Any]] = []
    sq = folder / "sqlite"
    sq.mkdir()
    results.append(run_store("sqlite", f"sqlite:///{sq / 'postwatch.db'}", sq, args))
    if not args.no_pg:
        import psycopg

        name = f"pw_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
            try:
                pg = folder / "pg"
                pg.mkdir()
                url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
                results.append(run_store("postgresql", url, pg, args))
            finally:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    print(f"load average before {load_before}, after {load()} ({os.cpu_count()} CPUs)")
    print(
        f"{'store':<11} {'durable/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'stored':>8} {'errors':>7} {'lost':>5} {'vs raw':>7}"
    )
    for r in results:
        print(
            f"{r['store']:<11} {r['rate']:>10,.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{r['max_ms']:>8.1f} {r['stored']:>8} {r['failures']:>7} {r['lost']:>5} "
            f"{float(r['rate']) / raw:>6.2f}x"
        )
        print(
            f"  {float(r['avg_batch']):.1f} submissions per commit on average; "
            f"load generator used {float(r['client_cpu']):.0%} of a core"
        )
        if r["failures"]:
            print(f"  first error: {r['first_failure']}")
        locks: dict[str, dict[str, float]] = r.get("locks") or {}
        for key, st in locks.items():
            print(
                f"  SQLite write lock, {key:<24} n={int(st['n']):>6}  p99 {st['p99_ms']:7.1f} ms"
                f"  max {st['max_ms']:7.1f} ms  total {st['total_ms'] / 1000:6.2f} s"
            )
    return {"raw": raw, "raw_p99": raw_p99, "results": results, "load": load_before}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0, help="per store")
    p.add_argument("--max-requests", type=int, default=100_000, help="per store")
    p.add_argument("--raw-seconds", type=float, default=5.0)
    p.add_argument("--dir", type=Path, default=ROOT, help="where the SQLite files go (the disk)")
    p.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    p.add_argument("--repeat", type=int, default=3, help="rounds (raw + each store); best+spread")
    p.add_argument(
        "--no-lock-stats",
        action="store_true",
        help="do not watch SQLite's write lock inside the server (it costs a little CPU)",
    )
    p.add_argument(
        "--smtp",
        choices=["stall", "refuse"],
        default="stall",
        help="stall: delivery workers wait on a silent SMTP server (intake alone); "
        "refuse: every delivery fails at once and is retried (workers compete for writes)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="postwatch serve processes on the one store, clients spread over them",
    )
    args = p.parse_args()

    print(
        f"{args.clients} concurrent clients, {args.seconds:g} s per store, "
        f"{args.processes} `postwatch serve` process(es) (all rooms' services, /f/ on the "
        f"intake's fast path, uvloop), SMTP {args.smtp}, {args.repeat} round(s)"
    )
    rounds: list[dict[str, Any]] = []
    lost = 0
    for i in range(args.repeat):
        print(f"\n--- round {i + 1} of {args.repeat}")
        folder = Path(tempfile.mkdtemp(prefix="pw-bench-", dir=args.dir))
        try:
            rnd = one_round(args, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        rounds.append(rnd)
        lost += sum(int(r["lost"]) for r in rnd["results"])

    if args.repeat > 1:
        print(f"\n=== summary of {args.repeat} rounds: best (range)")
        raws = [float(r["raw"]) for r in rounds]
        print(f"raw single-row commits/s: {max(raws):,.0f} ({min(raws):,.0f}-{max(raws):,.0f})")
        stores = [str(r["store"]) for r in rounds[0]["results"]]
        for k, store in enumerate(stores):
            rs = [rnd["results"][k] for rnd in rounds]
            rate = [float(r["rate"]) for r in rs]
            p99 = [float(r["p99_ms"]) for r in rs]
            p50 = [float(r["p50_ms"]) for r in rs]
            vs = [float(r["rate"]) / float(rnd["raw"]) for r, rnd in zip(rs, rounds, strict=True)]
            print(
                f"{store:<11} durable/s {max(rate):,.0f} ({min(rate):,.0f}-{max(rate):,.0f})  "
                f"p50 {min(p50):.1f} ms ({min(p50):.1f}-{max(p50):.1f})  "
                f"p99 {min(p99):.1f} ms ({min(p99):.1f}-{max(p99):.1f})  "
                f"vs raw of its round {max(vs):.2f}x ({min(vs):.2f}-{max(vs):.2f})"
            )
        print("load averages at the start of each round: " + "; ".join(
            str(r["load"]) for r in rounds))
    print(f"\nrows checked after each run: {'nothing lost' if lost == 0 else f'{lost} LOST'}")
    if lost:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
