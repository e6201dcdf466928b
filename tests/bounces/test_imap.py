"""IMAP IDLE on a real Dovecot bounce mailbox: Postfix's DSNs become events, once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import imapclient
import pytest

from postwatch.bounces.imap import KEYWORD, BounceMailboxConfig, BounceMailboxService
from postwatch.store import Database
from postwatch.store.events import fetch_events
from tests.conftest import make_config
from tests.mailstack import MailStack
from tests.watch.test_service import wait_for

pytestmark = pytest.mark.mailstack
INFO = "info@gym.example"
BOUNCES = "bounces@example.test"
FIX = Path(__file__).resolve().parent.parent / "fixtures" / "bounces"


def kinds(db: Database) -> list[str]:
    with db.session(readonly=True) as s:
        return [e.kind for e in fetch_events(s)]


async def test_idle_watch_turns_bounces_into_events(
    mailstack: MailStack, tmp_path: Path, sqlite_db: Database
) -> None:
    mailstack.reset()
    cfg = make_config(tmp_path)
    box = BounceMailboxConfig(
        account="gym",
        host="127.0.0.1",
        port=mailstack.imap_port,
        tls="none",
        user=BOUNCES,
        password=mailstack.password(BOUNCES),
        idle_timeout=1,
    )
    # a bounce that is already there when the watch starts (an Exim one, for an outside address)
    mailstack.doveadm(
        "save", "-u", BOUNCES, input=(FIX / "exim_remote_user_unknown.eml").read_bytes()
    )
    svc = BounceMailboxService(cfg, sqlite_db, box)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    try:
        await asyncio.to_thread(svc.ready.wait, 10)
        await wait_for(lambda: "bounce_received" in kinds(sqlite_db))
        # the form's mail to a full mailbox bounces; Postfix's DSN arrives in the bounce mailbox
        await asyncio.to_thread(mailstack.fill, INFO)
        await asyncio.to_thread(mailstack.send, BOUNCES, INFO, subject="lead", size=4000)
        await wait_for(lambda: "mailbox_full" in kinds(sqlite_db), timeout=20)
    finally:
        stop.set()
        await task
    mailstack.empty(INFO)
    assert kinds(sqlite_db) == ["bounce_received", "mailbox_full", "delivery_failed"]
    with sqlite_db.session(readonly=True) as s:
        failed = fetch_events(s, kinds=["delivery_failed"])[0]
        other = fetch_events(s, kinds=["bounce_received"])[0]
    assert failed.mailbox == INFO and failed.account == "gym"
    assert failed.data["reason"] == "mailbox_full" and failed.data["status"] == "5.2.2"
    assert failed.data["source"].startswith("bounce:imap://bounces@example.test@127.0.0.1")
    assert other.data["mailbox"] == "nobody@customer.example"
    assert other.data["reason"] == "user_unknown"
    # every message is marked; a restart handles nothing twice
    with imapclient.IMAPClient("127.0.0.1", port=mailstack.imap_port, ssl=False) as c:
        c.login(BOUNCES, mailstack.password(BOUNCES))
        c.select_folder("INBOX")
        assert c.search(["NOT", "KEYWORD", KEYWORD]) == []
    svc2 = BounceMailboxService(cfg, sqlite_db, box)
    stop2 = asyncio.Event()
    task2 = asyncio.create_task(svc2.run(stop2))
    await asyncio.to_thread(svc2.ready.wait, 10)
    stop2.set()
    await task2
    assert svc2.handled == 0
    assert len(kinds(sqlite_db)) == 3


async def test_wrong_password_retries_without_crashing(
    mailstack: MailStack, tmp_path: Path, sqlite_db: Database
) -> None:
    box = BounceMailboxConfig(
        host="127.0.0.1", port=mailstack.imap_port, tls="none", user=BOUNCES, password="wrong"
    )
    svc = BounceMailboxService(make_config(tmp_path), sqlite_db, box)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.sleep(3.5)
    assert not task.done() and not svc.ready.is_set()
    stop.set()
    await task
    assert "wrong" not in repr(box) and "wrong" not in str(box.model_dump())
    with sqlite_db.session(readonly=True) as s:
        evs = fetch_events(s, kinds=["bounce_source_failed"])
    assert len(evs) == 1  # once per outage, not per retry
    assert "AUTHENTICATIONFAILED" in evs[0].data["error"] or "auth" in evs[0].data["error"].lower()
    assert "wrong" not in str(evs[0].data)


def test_bounce_mailboxes_from_config(tmp_path: Path) -> None:
    """``[[bounce_mailboxes]]`` is part of the validated config; its password stays secret."""
    from postwatch.bounces.imap import bounce_mailboxes

    cfg = make_config(
        tmp_path,
        bounce_mailboxes=[
            {"host": "127.0.0.1", "user": "a@x.example", "tls": "none"},
            {"host": "imap.example.net", "user": "b@x.example", "password": "s3cret"},
        ],
    )
    boxes = bounce_mailboxes(cfg)
    assert [b.user for b in boxes] == ["a@x.example", "b@x.example"]
    assert boxes[1].password is not None and boxes[1].password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(boxes[1])
    assert bounce_mailboxes(make_config(tmp_path)) == []
