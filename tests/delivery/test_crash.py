"""End to end: submissions fired at a running ``postwatch serve``, ``kill -9`` midway, restart.

Every acknowledged submission is in the store and delivered to every recipient; no recipient
gets a submission twice except as a resend with the same Message-ID (a crash between the SMTP
server's 250 and the commit of that result).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import func, select

from postwatch.store import Database
from postwatch.store.models import DeliveryJob, Submission
from tests.smtpd import SmtpSink

pytest.importorskip("postwatch.intake.http", reason="the HTTP intake is not on this branch yet")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RECIPIENTS = ("info@gym.example", "sales@gym.example")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, db_url: str, http_port: int, smtp_port: int) -> Path:
    path.write_text(
        f"""
[server]
listen = "127.0.0.1:{http_port}"
[database]
url = "{db_url}"
[smtp]
host = "127.0.0.1"
port = {smtp_port}
sender = "postwatch@hoster.example"
timeout = "2s"
[delivery]
workers = 6
poll_interval = "0.1s"
lease = "8s"                   # at least 4 x smtp.timeout (check-config)
retry_base = "0.5s"
retry_max = "1s"
[intake]
rate_limit = 0
[[accounts]]
id = "gym"
[[accounts.forms]]
id = "contact"
recipients = ["{RECIPIENTS[0]}", "{RECIPIENTS[1]}"]
fallback = ["owner@private.example"]
""",
        encoding="utf-8",
    )
    return path


class Serve:
    def __init__(self, config: Path, port: int, log: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")) if p
        )
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postwatch", "serve", "--config", str(config)],
            cwd=config.parent, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited:\n{log.read_text()}"
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.proc.kill()
        raise AssertionError(f"serve not healthy:\n{log.read_text()}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


async def fire(base: str, acked: set[str], stop: asyncio.Event, clients: int) -> None:
    async def client(n: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = await c.post(
                        "/f/contact",
                        json={"name": f"client {n}", "email": f"c{n}.{i}@example.org",
                              "message": f"lead {n}/{i} {uuid.uuid4().hex[:6]}"},
                        headers={"Accept": "application/json"},
                    )
                except httpx.HTTPError:
                    await asyncio.sleep(0.02)  # the server is gone
                    continue
                if r.status_code == 201:
                    acked.add(r.json()["id"])

    await asyncio.gather(*(client(n) for n in range(clients)))


async def test_kill_9_midway_every_acknowledged_lead_delivered_once(
    db_url: str, tmp_path: Path
) -> None:
    # each mail takes a moment on the wire, so the kill lands while sends are in flight
    with SmtpSink(stall_seconds=0.05) as sink:
        sink.set_default("slow")
        port = free_port()
        config = write_config(tmp_path / "postwatch.toml", db_url, port, sink.port)
        log = tmp_path / "serve.log"
        server = Serve(config, port, log)
        acked: set[str] = set()
        stop = asyncio.Event()
        firing = asyncio.create_task(fire(server.base, acked, stop, clients=16))
        try:
            deadline = time.monotonic() + 60
            while (len(acked) < 150 or len(sink.messages) < 40) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            server.kill9()  # midway: requests and sends in flight
        finally:
            stop.set()
            await firing
        at_kill = len(acked)
        assert at_kill >= 150, log.read_text()

        server = Serve(config, port, log)
        db = Database(db_url)
        try:
            deadline = time.monotonic() + 120
            while True:
                with db.session(readonly=True) as s:
                    stored = set(s.scalars(select(Submission.id).where(Submission.id.in_(acked))))
                    open_jobs = s.scalar(
                        select(func.count()).select_from(DeliveryJob)
                        .where(DeliveryJob.state != "delivered")
                    )
                if open_jobs == 0:
                    break
                assert time.monotonic() < deadline, f"{open_jobs} jobs not delivered"
                await asyncio.sleep(0.2)
            assert server.terminate() == 0, log.read_text()
        finally:
            if server.proc.poll() is None:
                server.kill9()
        assert stored == acked, "an acknowledged submission is missing from the store"

        seen: dict[tuple[str, str], list[str]] = defaultdict(list)
        for m in sink.messages:
            sid = str(m.message["X-Postwatch-Submission"])
            seen[(sid, m.rcpt_tos[0])].append(m.message_id)
        for sid in acked:
            for rcpt in RECIPIENTS:
                assert seen.get((sid, rcpt)), f"{sid} never reached {rcpt}"
        resent = {k: v for k, v in seen.items() if len(v) > 1}
        for key, ids in resent.items():
            assert len(set(ids)) == 1, f"{key} delivered twice with different Message-IDs"
        with db.session(readonly=True) as s:
            all_ids = set(s.scalars(select(Submission.id)))
        assert {sid for sid, _ in seen} <= all_ids, "a mail for a submission never stored"
        db.dispose()
        print(f"acked {len(acked)} (at kill {at_kill}), mails {len(sink.messages)}, "
              f"resent with the same Message-ID: {len(resent)}")
