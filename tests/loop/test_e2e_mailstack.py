"""The gym's incident, end to end on a real Postfix + Dovecot.

postwatch's ``[smtp]`` is the stack's port 25 listener, which accepts everything (250, queued)
and delivers over LMTP to Dovecot, where info@gym.example is full: Dovecot refuses with
``552 5.2.2 Quota exceeded``, Postfix logs ``status=bounced`` and sends a DSN to postwatch's
envelope sender (bounces@example.test, a mailbox of the same stack, read over IMAP).

The fallback recipient owner@private.example is a mailbox on another domain of the same Postfix
(a second virtual domain delivered to its own Dovecot mailbox): the simplest honest set-up, with
the fallback copy taking the same real path (postwatch -> Postfix -> LMTP -> Maildir) as the
lead. The stack is this module's own (not the shared one), so nothing else fills or empties its
mailboxes meanwhile.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from postwatch.bounces.imap import BounceMailboxService, store_bounce
from postwatch.bounces.parse import parse_bytes
from postwatch.config import BounceMailboxConfig, Config
from postwatch.delivery.worker import DeliveryWorker
from postwatch.intake.submissions import NewSubmission, store_submission
from postwatch.outbox import retry_now
from postwatch.outbox.wake import wake
from postwatch.store import Database
from postwatch.store.events import fetch_events
from postwatch.store.models import DeliveryJob
from postwatch.watch.service import MaillogService
from tests.conftest import make_config
from tests.mailstack import MailStack
from tests.watch.test_service import wait_for

pytestmark = pytest.mark.mailstack

INFO = "info@gym.example"
OWNER = "owner@private.example"
BOUNCES = "bounces@example.test"


@pytest.fixture(scope="module")
def stack(mailstack_factory: Callable[..., MailStack]) -> MailStack:
    return mailstack_factory(
        users=[
            (INFO, "info-pw", "200K"),
            (OWNER, "owner-pw", ""),
            (BOUNCES, "bounces-pw", ""),
        ]
    )


def pw_config(
    tmp_path: Path, stack: MailStack, db: Database, *, log: bool, bounces: bool = True
) -> Config:
    overrides: dict[str, Any] = {
        "database": {"url": db.url},
        "smtp": {"host": "127.0.0.1", "port": stack.smtp_port, "sender": BOUNCES,
                 "timeout": "10s", "final": False},
        "delivery": {"workers": 1, "poll_interval": "1s", "retry_base": "1s",
                     "retry_max": "5s", "full_retry_every": "1h", "full_horizon": "7d"},
        "accounts": [{
            "id": "gym",
            "name": "Sportschool Fit",
            "forms": [{"id": "contact", "recipients": [INFO], "fallback": [OWNER],
                       "redirect": "https://gym.example/bedankt"}],
            "mailboxes": [{"address": INFO}],
        }],
    }
    if log:
        overrides["maillogs"] = [{"path": str(stack.postfix_log), "format": "postfix"}]
    if bounces:  # postwatch asks for bounce notices only where a watch reads them
        overrides["bounce_mailboxes"] = [bounce_box(stack).model_dump(mode="json") | {
            "password": stack.password(BOUNCES)}]
    return make_config(tmp_path, **overrides)


def bounce_box(stack: MailStack) -> BounceMailboxConfig:
    return BounceMailboxConfig(
        account="gym", host="127.0.0.1", port=stack.imap_port, tls="none", user=BOUNCES,
        password=SecretStr(stack.password(BOUNCES)), idle_timeout=1,
    )


def submit(db: Database, cfg: Config) -> str:
    found = cfg.form("gym/contact")
    assert found is not None
    account, form = found
    new = NewSubmission(account=account, form=form, fields={
        "name": "Jan Jansen", "email": "jan@example.org", "message": "Proefles graag!"})
    sid = store_submission(db, cfg, new).id
    wake()
    return sid


def job(db: Database, sid: str, rcpt: str) -> DeliveryJob | None:
    with db.session(readonly=True) as s:
        return s.query(DeliveryJob).filter_by(submission_id=sid, recipient=rcpt).one_or_none()


def state(db: Database, sid: str, rcpt: str) -> str | None:
    j = job(db, sid, rcpt)
    return j.state if j else None


def kinds(db: Database) -> list[str]:
    with db.session(readonly=True) as s:
        return [e.kind for e in fetch_events(s)]


def downstream(db: Database) -> list[dict[str, Any]]:
    with db.session(readonly=True) as s:
        return [e.data for e in fetch_events(s, kinds=["delivery_attempt"])
                if e.data.get("stage") == "downstream"]


def message_ids(stack: MailStack, address: str) -> list[str]:
    out = []
    for raw in stack.messages(address):
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        out.append(str(msg["Message-ID"]))
    return out


def dsns(stack: MailStack) -> list[bytes]:
    return [m for m in stack.messages(BOUNCES) if b"multipart/report" in m]


def _started(svc: MaillogService) -> bool:
    return svc.processor is not None


class Running:
    """postwatch's delivery worker, and the log watch and/or the bounce watch, in this loop."""

    def __init__(self, cfg: Config, db: Database, stack: MailStack, *, log: bool,
                 bounces: bool) -> None:
        self.services: list[Any] = [DeliveryWorker(cfg, db)]
        if log:
            self.services.append(MaillogService(cfg, db, cfg.maillogs[0]))
        self.bounce: BounceMailboxService | None = None
        if bounces:
            self.bounce = BounceMailboxService(cfg, db, bounce_box(stack))
            self.services.append(self.bounce)
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Running:
        self.tasks = [asyncio.create_task(s.run(self.stop)) for s in self.services]
        if self.bounce is not None:
            await asyncio.to_thread(self.bounce.ready.wait, 10)
        # the log follower starts at the end of the file: wait until it is there
        for svc in self.services:
            if isinstance(svc, MaillogService):
                await wait_for(partial(_started, svc))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


async def test_bounce_after_250_holds_falls_back_and_retry_delivers(
    stack: MailStack, tmp_path: Path, db: Database
) -> None:
    """Log path (and the DSN arriving too, over IMAP: no second effect)."""
    stack.reset()
    stack.fill(INFO)
    cfg = pw_config(tmp_path, stack, db, log=True)
    async with Running(cfg, db, stack, log=True, bounces=True) as run:
        since = stack.log_offset()
        sid = submit(db, cfg)
        # the worker sends: Postfix says 250 queued; Dovecot then refuses, Postfix bounces
        line = await asyncio.to_thread(
            stack.wait_log, r"to=<info@gym\.example>.*status=bounced", since=since)
        assert "5.2.2" in line
        await wait_for(lambda: state(db, sid, INFO) == "held", timeout=20)
        # the fallback gets the lead within seconds
        await wait_for(lambda: stack.message_count(OWNER) == 1, timeout=20)
        # Postfix's DSN reaches the bounce mailbox and is handled: no second hold/fallback
        await wait_for(lambda: run.bounce is not None and run.bounce.handled >= 1, timeout=20)
        # the DSN is the same attempt the log line already reported: no second event for the
        # mailbox either (one attempt, counted once)
        assert kinds(db).count("delivery_failed") == 1

        info_job = job(db, sid, INFO)
        assert info_job is not None and info_job.hold_until is not None
        assert info_job.last_reply == line and info_job.delivered_at is None
        assert state(db, sid, OWNER) == "delivered"
        assert kinds(db).count("delivery_held") == 1
        assert kinds(db).count("delivery_fallback") == 1
        [held] = downstream(db)
        assert held["result"] == "held" and held["evidence"] == line
        assert held["source"] == f"file:{stack.postfix_log}"
        assert held["message_id"] == info_job.message_id
        assert "mailbox_full" in kinds(db)  # the watched mailbox's episode opened once
        assert kinds(db).count("mailbox_full") == 1
        [lead] = [m for m in stack.messages(OWNER)]
        assert b"Jan Jansen" in lead and b"X-Postwatch-Fallback-For" in lead

        # the customer makes room; the held job is retried (as `postwatch delivery retry`)
        stack.empty(INFO)
        since = stack.log_offset()
        assert retry_now(db, recipient=INFO) == 1
        wake()
        await asyncio.to_thread(
            stack.wait_log, r"to=<info@gym\.example>.*status=sent", since=since)
        await wait_for(lambda: "delivery_confirmed" in kinds(db), timeout=20)
        await wait_for(lambda: "mailbox_recovered" in kinds(db), timeout=20)
    assert message_ids(stack, INFO) == [info_job.message_id]
    done = job(db, sid, INFO)
    assert done is not None and done.state == "delivered" and done.delivered_at is not None
    assert stack.message_count(OWNER) == 1  # the fallback got it once


async def test_dsn_path_alone_gives_the_same_result_and_is_idempotent(
    stack: MailStack, tmp_path: Path, db: Database
) -> None:
    """No log access (a hoster's MTA elsewhere): Postfix's real DSN, read over IMAP IDLE."""
    stack.reset()
    stack.fill(INFO)
    cfg = pw_config(tmp_path, stack, db, log=False)
    async with Running(cfg, db, stack, log=False, bounces=True) as run:
        sid = submit(db, cfg)
        await wait_for(lambda: state(db, sid, INFO) == "held", timeout=30)
        await wait_for(lambda: stack.message_count(OWNER) == 1, timeout=20)
        assert run.bounce is not None and run.bounce.handled == 1
    [held] = downstream(db)
    assert held["result"] == "held" and held["source"].startswith("bounce:imap://")
    assert held["status"] == "5.2.2" and held["reason"] == "mailbox_full"
    assert kinds(db).count("delivery_held") == 1 and kinds(db).count("delivery_fallback") == 1

    # the same DSN again (e.g. a second copy, or a file fed by hand): nothing changes
    [raw] = dsns(stack)
    before = (kinds(db), state(db, sid, INFO), state(db, sid, OWNER))
    with db.session() as s:
        _report, [again] = store_bounce(s, cfg, parse_bytes(raw), account="gym",
                                        source="bounce:file", evidence="again")
    assert again.result == "duplicate"
    after = kinds(db)
    # the watched mailbox's bounce is an event again (a delivery_failed), the job is not touched
    assert [k for k in after if k != "delivery_failed"] == [
        k for k in before[0] if k != "delivery_failed"]
    assert (state(db, sid, INFO), state(db, sid, OWNER)) == before[1:]
    assert len(downstream(db)) == 1


def test_dsn_file_applied_with_classify_bounce(
    stack: MailStack, tmp_path: Path, sqlite_db: Database
) -> None:
    """No watch at all: the worker hands over (250), Postfix bounces; the operator feeds the
    DSN file to ``postwatch classify-bounce --apply`` -> held + fallback; twice = once."""
    from typer.testing import CliRunner

    from postwatch.cli import app
    from postwatch.config import load_config
    from tests.delivery.conftest import drain

    stack.reset()
    stack.fill(INFO)
    toml = tmp_path / "postwatch.toml"
    toml.write_text(f"""
[database]
url = "{sqlite_db.url}"
[smtp]
host = "127.0.0.1"
port = {stack.smtp_port}
sender = "{BOUNCES}"
[[accounts]]
id = "gym"
[[accounts.forms]]
id = "contact"
recipients = ["{INFO}"]
fallback = ["{OWNER}"]
redirect = "https://gym.example/bedankt"
""")
    cfg = load_config(toml)
    sid = submit(sqlite_db, cfg)
    since = stack.log_offset()
    assert drain(DeliveryWorker(cfg, sqlite_db)) == 1
    assert state(sqlite_db, sid, INFO) == "delivered"  # the relay's 250: handed over
    stack.wait_log(r"to=<info@gym\.example>.*status=bounced", since=since)
    for _ in range(200):
        if dsns(stack):
            break
        time.sleep(0.05)
    [raw] = dsns(stack)
    eml = tmp_path / "dsn.eml"
    eml.write_bytes(raw)
    runner = CliRunner()
    res = runner.invoke(app, ["classify-bounce", "--apply", "--config", str(toml), str(eml)])
    assert res.exit_code == 0, res.output
    assert '"reason": "mailbox_full"' in res.stdout
    assert "held 1" in res.stderr
    assert state(sqlite_db, sid, INFO) == "held"
    assert state(sqlite_db, sid, OWNER) == "pending"
    res2 = runner.invoke(app, ["classify-bounce", "--apply", "--config", str(toml), str(eml)])
    assert res2.exit_code == 0 and "duplicate 1" in res2.stderr
    assert kinds(sqlite_db).count("delivery_held") == 1
    assert kinds(sqlite_db).count("delivery_fallback") == 1
