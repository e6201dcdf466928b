"""End to end on the real Postfix + Dovecot: a full mailbox becomes events, and recovers."""

from __future__ import annotations

import asyncio
import json
import smtplib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from postwatch.cli import app
from postwatch.config import load_config
from postwatch.store import Database
from postwatch.store.events import fetch_events
from postwatch.watch.service import MaillogService
from tests.mailstack import MailStack
from tests.watch.test_service import wait_for

pytestmark = pytest.mark.mailstack
INFO = "info@gym.example"


def write_config(tmp_path: Path, stack: MailStack) -> Path:
    cfg = tmp_path / "postwatch.toml"
    cfg.write_text(
        f"""
[database]
url = "sqlite:///{tmp_path / "pw.db"}"

[[accounts]]
id = "gym"

[[accounts.mailboxes]]
address = "{INFO}"

[[maillogs]]
path = "{stack.postfix_log}"
format = "auto"
"""
    )
    return cfg


def kinds(db: Database) -> list[str]:
    with db.session(readonly=True) as s:
        return [e.kind for e in fetch_events(s)]


async def test_fill_bounce_empty_recover(mailstack: MailStack, tmp_path: Path) -> None:
    mailstack.reset()
    cfg_path = write_config(tmp_path, mailstack)
    cfg = load_config(cfg_path)
    db = Database(cfg.database.url)
    db.migrate()
    svc = MaillogService(cfg, db, cfg.maillogs[0])
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    try:
        await asyncio.sleep(0.2)
        since = mailstack.log_offset()
        await asyncio.to_thread(mailstack.send, "web@example.test", INFO, subject="before")
        await asyncio.to_thread(
            mailstack.wait_log, r"to=<info@gym\.example>.*status=sent", since=since
        )
        await asyncio.to_thread(mailstack.fill, INFO)
        since = mailstack.log_offset()
        await asyncio.to_thread(
            mailstack.send, "web@example.test", INFO, subject="lead 1", size=4000
        )
        line = await asyncio.to_thread(
            mailstack.wait_log, r"to=<info@gym\.example>.*status=bounced", since=since
        )
        await wait_for(lambda: "mailbox_full" in kinds(db))
        # a second failure, refused at RCPT time by Dovecot's quota-status policy
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            await asyncio.to_thread(
                mailstack.send, "someone@example.test", INFO, port="rcpt", size=4000
            )
        await wait_for(lambda: kinds(db).count("delivery_failed") == 2)
        await asyncio.to_thread(mailstack.empty, INFO)
        await asyncio.to_thread(mailstack.send, "web@example.test", INFO, subject="after")
        await wait_for(lambda: "mailbox_recovered" in kinds(db))
    finally:
        stop.set()
        await task
    assert kinds(db) == ["mailbox_full", "delivery_failed", "delivery_failed", "mailbox_recovered"]
    with db.session(readonly=True) as s:
        full = fetch_events(s, kinds=["mailbox_full"])[0]
        failed = fetch_events(s, kinds=["delivery_failed"])
        rec = fetch_events(s, kinds=["mailbox_recovered"])[0]
    assert full.data["evidence"] == line
    assert full.account == "gym" and full.mailbox == INFO
    assert failed[0].data["status"] == "5.2.2" and failed[0].data["outcome"] == "bounced"
    assert failed[1].data["outcome"] == "rejected" and failed[1].data["reason"] == "mailbox_full"
    assert "NOQUEUE: reject: RCPT" in failed[1].data["evidence"]
    assert rec.data["failures"] == 2
    # and the lead's CLI shows them
    res = CliRunner().invoke(
        app, ["events", "--config", str(cfg_path), "--kind", "mailbox_full", "--json"]
    )
    assert res.exit_code == 0, res.output
    row = json.loads(res.output.strip().splitlines()[0])
    assert row["kind"] == "mailbox_full" and row["data"]["evidence"] == line
