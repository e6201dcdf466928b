"""Benchmark: from a mailbox-full line appended to a followed mail log to the webhook.

100 incidents (100 different mailboxes of one account, each getting full once), one after
another: for each, a Postfix "status=bounced ... 552 5.2.2 Quota exceeded" line is appended to
a log file that the live watch (``postwatch.watch``'s MaillogService) follows; the alert
service (defaults: ``alerts.poll_interval = 500ms``) turns the ``mailbox_full`` event into an
alert and sends it through Apprise (``json://``) to a real HTTP server on loopback. The latency
is from just before the append to the moment the HTTP server has the request.

    python benchmarks/alerts.py [--incidents 100] [--poll 0.5] [--pg postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from postwatch.alerts.service import AlertService
from postwatch.config import MaillogConfig, config_from_dict
from postwatch.store import Database
from postwatch.watch.service import MaillogService

_q = itertools.count(0xBE00000001)


class Sink:
    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.cond = threading.Condition()
        sink = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                t = time.perf_counter()
                with sink.cond:
                    sink.arrived.setdefault(self.path, t)
                    sink.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def full_line(box: str) -> str:
    q = f"{next(_q):X}"
    t = time.strftime("%b %d %H:%M:%S")
    return (
        f"{t} mail postfix/lmtp[10400]: {q}: to=<{box}>, relay=mail.pw.test[/run/lmtp], "
        "delay=0.02, delays=0.01/0/0/0.01, dsn=5.2.2, status=bounced (host mail.pw.test"
        f"[/run/lmtp] said: 552 5.2.2 <{box}> Quota exceeded (mailbox for user is full) "
        "(in reply to end of DATA command))\n"
    )


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--incidents", type=int, default=100)
    ap.add_argument("--poll", type=float, default=0.5, help="alerts.poll_interval in seconds")
    ap.add_argument(
        "--pg",
        help="PostgreSQL instead of SQLite: 'auto' (a temporary database on 127.0.0.1:5432, "
        "user postgres, dropped after) or the URL of an empty database",
    )
    args = ap.parse_args()
    dropdb: Any = None
    if args.pg == "auto":
        import uuid

        import psycopg

        name = f"pw_bench_{uuid.uuid4().hex[:10]}"
        admin = psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True)
        admin.execute(f'CREATE DATABASE "{name}"')
        args.pg = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

        def dropdb() -> None:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()

    n = min(args.incidents, 1000)
    sink = Sink()
    tmp = Path(tempfile.mkdtemp(prefix="pw-bench-alerts-"))
    log = tmp / "mail.log"
    log.write_text("")
    boxes = [f"box{i:04d}@gym.example" for i in range(n)]
    url = args.pg or f"sqlite:///{tmp / 'postwatch.db'}"
    cfg = config_from_dict(
        {
            "database": {"url": url},
            "accounts": [
                {
                    "id": "gym",
                    "mailboxes": [{"address": b} for b in boxes],
                    "contacts": [
                        {
                            "name": "Owner",
                            "role": "owner",
                            "channels": [f"json://127.0.0.1:{sink.port}/owner"],
                        }
                    ],
                }
            ],
            "alerts": {"poll_interval": args.poll, "secret": "bench"},
        },
        tmp / "postwatch.toml",
    )
    cfg.maillogs = [MaillogConfig(path=log, format="postfix")]
    db = Database(url)
    db.migrate()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(MaillogService(cfg, db, cfg.maillogs[0]).run(stop)),
        asyncio.create_task(AlertService(cfg, db).run(stop)),
    ]
    await asyncio.sleep(0.5)
    lat: list[float] = []
    lost = 0
    deadline = time.monotonic() + 240
    for i, box in enumerate(boxes):
        if time.monotonic() > deadline:
            break
        sink.arrived.pop("/owner", None)
        t0 = time.perf_counter()
        with open(log, "a") as fh:
            fh.write(full_line(box))
        got = None
        for _ in range(200):  # at most 10 s
            await asyncio.sleep(0.005)
            got = sink.arrived.get("/owner")
            if got is not None:
                break
        if got is None:
            lost += 1
            continue
        lat.append(got - t0)
        await asyncio.sleep(0.05 + (i % 7) * 0.037)  # incidents at irregular times
    stop.set()
    await asyncio.gather(*tasks)
    db.dispose()
    if dropdb is not None:
        dropdb()
    res = {
        "store": "postgresql" if args.pg else "sqlite",
        "incidents": len(lat) + lost,
        "received": len(lat),
        "lost": lost,
        "alerts_poll_interval_s": args.poll,
        "p50_s": round(statistics.median(lat), 3) if lat else None,
        "p99_s": round(pct(lat, 99), 3) if lat else None,
        "max_s": round(max(lat), 3) if lat else None,
        "mean_s": round(statistics.mean(lat), 3) if lat else None,
    }
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
