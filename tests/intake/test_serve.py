"""A real ``postwatch serve`` process: kill -9 loses nothing acknowledged, SIGTERM drains, and
the README's first command gives a working form endpoint."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from postwatch.store import Database
from postwatch.store.models import DeliveryJob, Submission
from tests.intake.serving import SRC, Serve, free_port, write_config

pytestmark = pytest.mark.slow


async def _fire(base: str, acked: dict[str, str | None], stop: asyncio.Event, clients: int) -> int:
    """``clients`` concurrent posters, each with unique idempotency keys, until ``stop``.
    ``acked`` gets key -> id (JSON replies) or None (303 replies) for every success."""
    sent = 0

    async def one(n: int) -> None:
        nonlocal sent
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            i = 0
            while not stop.is_set():
                i += 1
                key = f"{n}-{i}-{uuid.uuid4().hex[:8]}"
                try:
                    if i % 2:
                        r = await c.post(
                            "/f/contact",
                            json={"name": f"c{n}", "i": i, "_idempotency_key": key},
                        )
                    else:
                        r = await c.post(
                            "/f/contact",
                            data={"name": f"c{n}", "i": str(i), "_idempotency_key": key},
                        )
                except httpx.HTTPError:
                    await asyncio.sleep(0.01)  # the server is gone (or restarting)
                    continue
                sent += 1
                if r.status_code == 201:
                    acked[key] = r.json()["id"]
                elif r.status_code == 303:
                    acked[key] = None

    await asyncio.gather(*(one(n) for n in range(clients)))
    return sent


async def test_kill_9_loses_no_acknowledged_submission(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "postwatch.toml", db_url, port)
    server = Serve(config, port)
    acked: dict[str, str | None] = {}
    stop = asyncio.Event()
    firing = asyncio.create_task(_fire(server.base, acked, stop, clients=48))
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 300 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        server.kill()  # midway: requests are in flight right now
        at_kill = len(acked)
    finally:
        stop.set()
        await firing
    assert at_kill >= 300, server.output()

    restarted = Serve(config, port)
    try:
        db = Database(db_url)
        with db.session(readonly=True) as s:
            keys = dict(s.execute(select(Submission.idempotency_key, Submission.id)).all())
            jobs = dict(
                s.execute(
                    select(DeliveryJob.submission_id, func.count())
                    .where(DeliveryJob.role == "primary")
                    .group_by(DeliveryJob.submission_id)
                ).all()
            )
        db.dispose()
        lost = [k for k in acked if k not in keys]
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged submissions lost"
        for key, sid in acked.items():
            if sid is not None:
                assert keys[key] == sid
            assert jobs.get(keys[key]) == 2, "each stored submission has its delivery jobs"
        # the restarted server takes submissions and remembers idempotency keys
        async with httpx.AsyncClient(base_url=restarted.base) as c:
            key, sid = next((k, v) for k, v in acked.items() if v is not None)
            r = await c.post("/f/contact", json={"_idempotency_key": key})
            assert r.status_code == 201 and r.json()["id"] == sid
            r = await c.post("/f/contact", json={"after": "restart"})
            assert r.status_code == 201
    finally:
        assert restarted.terminate() == 0, restarted.output()


async def test_sigterm_drains_in_flight_requests(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "postwatch.toml", db_url, port)
    server = Serve(config, port)
    body = b'{"name": "slow client", "msg": "' + b"x" * 2000 + b'"}'
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /f/contact HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:1000]
    )
    await writer.drain()
    await asyncio.sleep(0.3)
    server.proc.send_signal(15)  # SIGTERM while the body is half sent
    await asyncio.sleep(0.5)
    assert server.proc.poll() is None, "serve exited with a request in flight"
    writer.write(body[1000:])
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=20)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    reply = head + await asyncio.wait_for(reader.readexactly(length), timeout=20)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 201"), reply
    sid = re.search(rb'"id":"([0-9a-f]{32})"', reply)
    assert sid is not None
    assert server.terminate() == 0, server.output()
    # the service log says that it stops and when it has stopped (issue 10)
    out = server.log.read_text(errors="replace")
    assert "postwatch stopping" in out and "postwatch stopped" in out, out
    db = Database(db_url)
    with db.session(readonly=True) as s:
        assert s.get(Submission, sid.group(1).decode()) is not None
    db.dispose()
    # and it no longer listens
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_readme_first_command_gives_a_working_form(tmp_path: Path) -> None:
    """`postwatch serve --init --config postwatch.toml` in an empty folder, then POST /f/contact.

    The sample config listens on 127.0.0.1:8025 and sends via 127.0.0.1:25; tests never use
    fixed ports (others run tests on this machine), so the written sample gets two free ports
    before the server starts. Everything else is the README's command as written.
    """
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC)
    init = subprocess.run(
        [sys.executable, "-m", "postwatch", "init", "--config", "postwatch.toml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert init.returncode == 0, init.stderr
    cfg = tmp_path / "postwatch.toml"
    port = free_port()
    text = cfg.read_text()
    assert 'listen = "127.0.0.1:8025"' in text
    text = text.replace('listen = "127.0.0.1:8025"', f'listen = "127.0.0.1:{port}"')
    text = text.replace("port = 25\n", f"port = {free_port()}\n")
    cfg.write_text(text)
    server = Serve(cfg, port, cwd=tmp_path, args=("--init",))
    try:
        browser = httpx.post(
            server.base + "/f/contact",
            data={"name": "Anna", "email": "anna@example.org"},
            follow_redirects=False,
        )
        assert browser.status_code == 303
        assert browser.headers["location"] == "https://example.org/thank-you"
        api = httpx.post(
            server.base + "/f/contact",
            json={"name": "Bert"},
            headers={"Accept": "application/json"},
        )
        assert api.status_code == 201 and api.json()["status"] == "stored"
    finally:
        assert server.terminate() == 0, server.output()
    assert (tmp_path / "data" / "postwatch.db").exists()


async def test_two_serve_processes_share_one_store(db_url: str, tmp_path: Path) -> None:
    """Several `postwatch serve` on one store (PostgreSQL: the scale-out path; SQLite: two
    processes on one file): double submits spread over both are still one submission each."""
    ports = [free_port(), free_port()]
    servers = []
    for i, port in enumerate(ports):
        folder = tmp_path / f"p{i}"
        folder.mkdir()
        servers.append(Serve(write_config(folder / "postwatch.toml", db_url, port), port))
    try:
        keys = [f"dbl-{n}" for n in range(30)]

        async def post(base: str, key: str) -> tuple[str, int, str]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as c:
                r = await c.post(
                    "/f/contact",
                    data={"k": key},
                    headers={"Idempotency-Key": key, "Accept": "application/json"},
                )
                return key, r.status_code, r.json().get("id", "")

        replies = await asyncio.gather(
            *(post(s.base, k) for k in keys for s in servers for _ in range(3))
        )
    finally:
        for s in servers:
            assert s.terminate() == 0, s.output()
    assert {code for _k, code, _id in replies} == {201}
    ids: dict[str, set[str]] = {}
    for key, _code, sid in replies:
        ids.setdefault(key, set()).add(sid)
    assert all(len(v) == 1 for v in ids.values())
    db = Database(db_url)
    with db.session(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Submission)) == len(keys)
        primary = select(func.count()).where(DeliveryJob.role == "primary")
        assert s.scalar(primary) == 2 * len(keys)
    db.dispose()
