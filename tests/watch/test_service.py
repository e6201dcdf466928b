"""The watch services as ``postwatch serve`` runs them: files followed into events, syslog."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from postwatch.config import Config
from postwatch.store import Database
from postwatch.store.events import fetch_events
from postwatch.store.models_watch import FollowedFile
from postwatch.watch.service import MaillogService, SyslogService, build_services, load_position
from tests.conftest import make_config
from tests.watch import lines as L


def watch_config(tmp_path: Path, log: Path, **extra: Any) -> Config:
    return make_config(tmp_path, maillogs=[{"path": str(log), "format": "auto"}], **extra)


def events(db: Database, *kinds: str) -> list[Any]:
    with db.session(readonly=True) as s:
        return list(fetch_events(s, kinds=list(kinds) or None))


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def append(path: Path, lines: list[str]) -> None:
    with open(path, "a") as fh:
        fh.write("".join(x + "\n" for x in lines))


async def run_service(svc: MaillogService) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    # started = its position taken (a line appended before that would be history)
    await wait_for(lambda: svc.processor is not None or task.done(), timeout=30)
    await asyncio.sleep(0.1)
    return stop, task


async def test_follow_rotate_restart_without_loss_or_duplicates(
    tmp_path: Path, db: Database
) -> None:
    log = tmp_path / "mail.log"
    log.write_text("\n".join(L.bounced_full(L.qid())) + "\n")  # history: not read
    cfg = watch_config(tmp_path, log)
    svc = MaillogService(cfg, db, cfg.maillogs[0])
    stop, task = await run_service(svc)
    append(log, L.noise(50) + L.bounced_full(L.qid()))
    await wait_for(lambda: len(events(db, "delivery_failed")) == 1)
    assert [e.kind for e in events(db)] == ["mailbox_full", "delivery_failed"]
    # rotation by rename while running
    os.rename(log, tmp_path / "mail.log.1")
    log.write_text("")
    append(log, L.bounced_full(L.qid()))
    await wait_for(lambda: len(events(db, "delivery_failed")) == 2)
    stop.set()
    await task
    # lines written while postwatch is down, then a rotation, then a restart
    append(log, L.bounced_full(L.qid()) + L.noise(10))
    os.rename(log, tmp_path / "mail.log.2")
    log.write_text("")
    append(log, L.delivered(L.qid()))
    svc2 = MaillogService(cfg, db, cfg.maillogs[0])
    stop, task = await run_service(svc2)
    await wait_for(lambda: len(events(db, "mailbox_recovered")) == 1)
    # restart again: nothing is read twice
    stop.set()
    await task
    svc3 = MaillogService(cfg, db, cfg.maillogs[0])
    stop, task = await run_service(svc3)
    await asyncio.sleep(0.3)
    stop.set()
    await task
    assert [e.kind for e in events(db)] == [
        "mailbox_full",
        "delivery_failed",
        "delivery_failed",
        "delivery_failed",
        "mailbox_recovered",
    ]
    rec = events(db, "mailbox_recovered")[0]
    assert rec.data["failures"] == 3
    pos = load_position(db, str(log))
    assert pos is not None and pos.offset == log.stat().st_size


async def test_copytruncate_and_late_file(tmp_path: Path, db: Database) -> None:
    log = tmp_path / "later" / "mail.log"
    cfg = watch_config(tmp_path, log)
    svc = MaillogService(cfg, db, cfg.maillogs[0])
    stop, task = await run_service(svc)
    log.parent.mkdir()
    log.write_text("")
    append(log, L.bounced_full(L.qid()))
    await wait_for(lambda: len(events(db, "delivery_failed")) == 1)
    with open(log, "r+") as fh:
        fh.truncate(0)
    append(log, L.delivered(L.qid()))
    await wait_for(lambda: len(events(db, "mailbox_recovered")) == 1)
    stop.set()
    await task


async def test_build_services_and_syslog_both_rfcs(tmp_path: Path, db: Database) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = watch_config(tmp_path, tmp_path / "mail.log", syslog={"listen": f"127.0.0.1:{port}"})
    services = build_services(cfg, db)
    assert {type(s).__name__ for s in services} >= {"MaillogService", "SyslogService"}
    svc = next(s for s in services if isinstance(s, SyslogService))
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await wait_for(lambda: svc.listener.tcp_port is not None)
    q1 = L.qid()
    # RFC 3164 over UDP: the mail server mx1 forwards its bounce line
    body = L.bounced_full(q1)[3].split(": ", 1)[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.sendto(f"<22>Nov 29 18:23:18 mx1 postfix/lmtp[10400]: {body}".encode(), ("127.0.0.1", port))
    udp.close()
    await wait_for(lambda: len(events(db, "delivery_failed")) == 1)
    # RFC 5424 over TCP, octet-counted: mx2 delivers again -> recovered
    q2 = L.qid()
    body2 = L.delivered(q2)[1].split(": ", 1)[1]
    msg = f"<22>1 2026-11-29T18:30:00Z mx2 postfix/lmtp 10402 - - {body2}".encode()
    _r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"%d %s" % (len(msg), msg))
    await w.drain()
    w.close()
    await w.wait_closed()
    await wait_for(lambda: len(events(db, "mailbox_recovered")) == 1)
    stop.set()
    await task
    failed = events(db, "delivery_failed")[0]
    assert failed.data["source"] == "syslog:mx1" and failed.data["reason"] == "mailbox_full"
    assert events(db, "mailbox_recovered")[0].data["source"] == "syslog:mx2"


async def test_watch_status_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from postwatch.cli import app

    log = tmp_path / "mail.log"
    log.write_text("")
    cfg_path = tmp_path / "postwatch.toml"
    cfg_path.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "pw.db"}"\n'
        f'[[maillogs]]\npath = "{log}"\nformat = "postfix"\n'
    )
    from postwatch.config import load_config

    cfg = load_config(cfg_path)
    db = Database(cfg.database.url)
    db.migrate()
    svc = MaillogService(cfg, db, cfg.maillogs[0])
    stop, task = await run_service(svc)
    append(log, L.noise(30))

    def caught_up() -> bool:
        pos = load_position(db, str(log))
        return pos is not None and pos.offset == log.stat().st_size

    await wait_for(caught_up)  # stored while running, once the follower is idle
    stop.set()
    await task
    res = CliRunner().invoke(app, ["watch-status", "--config", str(cfg_path), "--json"])
    assert res.exit_code == 0, res.output
    import json

    row = json.loads(res.output)
    assert row["offset"] == log.stat().st_size and row["behind_bytes"] == 0
    assert row["lines"] == 30


async def test_postwatch_worker_runs_the_watch(tmp_path: Path, sqlite_db: Database) -> None:
    """The composition root (``postwatch serve`` / ``worker``) finds and runs the watch."""
    from postwatch.app import run

    log = tmp_path / "mail.log"
    log.write_text("")
    cfg = watch_config(tmp_path, log)
    stop = asyncio.Event()
    task = asyncio.create_task(run(cfg, sqlite_db, http=False, stop=stop))

    def following() -> bool:
        # a file present at the very first start is read from its end: wait until the watch
        # has taken its position (other services may take a while to start), nudging it with
        # lines that make no event
        append(log, "Nov 29 00:00:00 host other[1]: nothing to see")
        with sqlite_db.session(readonly=True) as s:
            return s.scalar(select(func.count()).select_from(FollowedFile)) == 1

    await wait_for(following)
    append(log, L.bounced_full(L.qid()))
    await wait_for(lambda: len(events(sqlite_db, "mailbox_full")) == 1)
    stop.set()
    await task


async def test_start_beginning_reads_what_the_file_already_holds(
    tmp_path: Path, sqlite_db: Database
) -> None:
    """``[[maillogs]] start = "beginning"``: a first start turns existing lines into events."""
    log = tmp_path / "mail.log"
    log.write_text("")
    append(log, L.bounced_full(L.qid()))
    cfg = make_config(
        tmp_path,
        maillogs=[{"path": str(log), "format": "postfix", "start": "beginning"}],
    )
    svc = MaillogService(cfg, sqlite_db, cfg.maillogs[0])
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await wait_for(lambda: len(events(sqlite_db, "mailbox_full")) == 1)
    stop.set()
    await task
