"""Benchmark of the delivery watch.

1. Detection latency: a writer process appends 5,000 ordinary Postfix lines per second to a
   followed file and, among them, 1,000 bounce lines for a watched mailbox; ``postwatch``'s
   MaillogService (SQLite store, fsync on commit) follows the file. Latency = time from the
   line's write() to the commit of its ``delivery_failed`` event. Reports p50/p90/p99/max, and
   the latency of the first ``mailbox_full`` event.
2. Throughput on one core: the follower + shared parser + tracker over a 500,000-line Postfix
   log (lines/s), and the whole service including the store, from the start of the file to its
   end.

    PYTHONPATH=src python benchmarks/watch.py [--probes 1000] [--rate 5000] [--lines 500000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from postwatch.config import config_from_dict
from postwatch.store import Database
from postwatch.watch import service as service_mod
from postwatch.watch.detect import LineProcessor
from postwatch.watch.follow import Follower

WATCHED = "info@gym.example"


def stamp() -> str:
    return time.strftime("%b %e %H:%M:%S", time.gmtime())


def ordinary(i: int, t: str) -> list[str]:
    q = f"{0x10000000 + i:X}"
    return [
        f"{t} mail postfix/smtpd[1001]: {q}: client=web1.hoster.example[192.0.2.10]",
        f"{t} mail postfix/cleanup[1002]: {q}: message-id=<{q}@hoster.example>",
        f"{t} mail postfix/qmgr[1003]: {q}: from=<web@example.test>, size=2412, nrcpt=1 "
        "(queue active)",
        f"{t} mail postfix/smtp[1004]: {q}: to=<user{i % 977}@customer.example>, "
        "relay=mx.customer.example[198.51.100.7]:25, delay=0.4, delays=0.01/0/0.2/0.2, "
        "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4XyZ1)",
        f"{t} mail postfix/qmgr[1003]: {q}: removed",
    ]


def probe(i: int, t: str) -> str:
    q = f"{0xF0000000 + i:X}"
    return (
        f"{t} mail postfix/lmtp[2001]: {q}: to=<{WATCHED}>, relay=mail.gym.example"
        "[private/dovecot-lmtp], delay=0.02, delays=0.01/0/0/0.01, dsn=5.2.2, status=bounced "
        f"(host mail.gym.example[private/dovecot-lmtp] said: 552 5.2.2 <{WATCHED}> Quota "
        "exceeded (mailbox for user is full) (in reply to end of DATA command))"
    )


def writer(path: str, rate: int, probes: int, probe_rate: float, conn: Any) -> None:
    """Append ``rate`` ordinary lines/s and ``probe_rate`` probe lines/s; report write times."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    written: dict[str, float] = {}
    next_probe = 0
    start = time.monotonic()
    n = 0
    i = 0
    conn.send("ready")
    conn.recv()  # go
    start = time.monotonic()
    while next_probe < probes:
        t = stamp()
        lines: list[str] = []
        while len(lines) < per_tick:
            lines.extend(ordinary(i, t))
            i += 1
        data = ("\n".join(lines[:per_tick]) + "\n").encode()
        os.write(fd, data)
        n += per_tick
        now = time.monotonic()
        if now - start >= next_probe / probe_rate:
            line = probe(next_probe, t)
            os.write(fd, (line + "\n").encode())
            written[f"{0xF0000000 + next_probe:X}"] = time.monotonic()
            next_probe += 1
        tick_end = start + (n / rate)
        delay = tick_end - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - start
    os.close(fd)
    conn.send((written, n, elapsed))


def config(tmp: Path, log: Path) -> Any:
    return config_from_dict(
        {
            "database": {"url": f"sqlite:///{tmp / 'pw.db'}"},
            "accounts": [{"id": "gym", "mailboxes": [{"address": WATCHED}]}],
            "maillogs": [{"path": str(log), "format": "postfix"}],
        },
        tmp / "postwatch.toml",
    )


def latency(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="pw-bench-watch-"))
    log = tmp / "mail.log"
    log.write_text("")
    cfg = config(tmp, log)
    db = Database(cfg.database.url)
    db.migrate()
    stored: dict[str, float] = {}
    first_full: list[float] = []
    original = service_mod.save_progress

    def timed_save(*a: Any, **kw: Any) -> list[str]:
        kinds = original(*a, **kw)
        now = time.monotonic()
        for obs in a[3]:
            stored.setdefault(obs.data["queue_id"], now)
        if "mailbox_full" in kinds:
            first_full.append(now)
        return kinds

    service_mod.save_progress = timed_save  # type: ignore[assignment]
    parent, child = mp.Pipe()
    proc = mp.Process(
        target=writer, args=(str(log), args.rate, args.probes, args.probe_rate, child)
    )
    proc.start()
    assert parent.recv() == "ready"

    async def main() -> tuple[dict[str, float], int, float]:
        svc = service_mod.MaillogService(cfg, db, cfg.maillogs[0], poll_interval=args.poll)
        stop = asyncio.Event()
        task = asyncio.create_task(svc.run(stop))
        await asyncio.sleep(0.3)
        parent.send("go")
        result = await asyncio.to_thread(parent.recv)
        deadline = time.monotonic() + 10
        while len(stored) < args.probes and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await task
        return result  # type: ignore[no-any-return]

    written, n, elapsed = asyncio.run(main())
    proc.join()
    service_mod.save_progress = original  # type: ignore[assignment]
    db.dispose()
    shutil.rmtree(tmp, ignore_errors=True)
    lat = sorted((stored[q] - t) * 1000 for q, t in written.items() if q in stored)
    first_q = f"{0xF0000000:X}"
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
    return {
        "ordinary_lines": n,
        "ordinary_rate": round(n / elapsed),
        "probes_written": len(written),
        "probes_stored": len(lat),
        "p50_ms": round(q[49], 1),
        "p90_ms": round(q[89], 1),
        "p99_ms": round(q[98], 1),
        "max_ms": round(lat[-1], 1) if lat else None,
        "first_mailbox_full_ms": round((first_full[0] - written[first_q]) * 1000, 1)
        if first_full
        else None,
    }


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="pw-bench-watch-"))
    log = tmp / "mail.log"
    t = "Nov 29 18:00:00"
    with open(log, "w") as fh:
        i = 0
        n = 0
        while n < args.lines:
            block = ordinary(i, t)
            if i % 1000 == 0:
                block.append(probe(i, t))
            fh.write("\n".join(block) + "\n")
            n += len(block)
            i += 1
    size = log.stat().st_size
    # follower + parser + tracker, no store
    proc = LineProcessor({WATCHED: "gym"}, source="bench", fmt="postfix")
    f = Follower(log, start="beginning")
    t0 = time.process_time()
    w0 = time.perf_counter()
    obs = 0
    while True:
        chunk = f.poll()
        if chunk is None:
            break
        obs += len(proc.feed(chunk.lines))
    cpu = time.process_time() - t0
    wall = time.perf_counter() - w0
    f.close()
    # the whole service with the store
    cfg = config(tmp, log)
    db = Database(cfg.database.url)
    db.migrate()

    async def main() -> float:
        svc = service_mod.MaillogService(cfg, db, cfg.maillogs[0], start="beginning")
        stop = asyncio.Event()
        w = time.perf_counter()
        task = asyncio.create_task(svc.run(stop))
        while True:
            await asyncio.sleep(0.02)
            pos = service_mod.load_position(db, str(log))
            if pos is not None and pos.offset >= size and svc.processor is not None:
                break
        took = time.perf_counter() - w
        stop.set()
        await task
        return took

    took = asyncio.run(main())
    db.dispose()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "lines": proc.lines,
        "bytes": size,
        "events": obs,
        "parse_lines_per_s_cpu": round(proc.lines / cpu),
        "parse_lines_per_s_wall": round(proc.lines / wall),
        "service_lines_per_s_wall": round(proc.lines / took),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=5000, help="ordinary lines per second")
    ap.add_argument("--probe-rate", type=float, default=40.0, help="probe lines per second")
    ap.add_argument("--poll", type=float, default=0.05, help="follower idle poll interval (s)")
    ap.add_argument("--lines", type=int, default=500_000)
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    if not args.skip_latency:
        print("latency:", latency(args), flush=True)
    print("throughput:", throughput(args), flush=True)


if __name__ == "__main__":
    main()
