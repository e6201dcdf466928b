"""What postwatch announces in the SMTP envelope, checked against a real Postfix + Dovecot.

- ``SIZE=`` on ``MAIL FROM`` (RFC 1870): Dovecot's quota-status policy decides at RCPT with the
  size the client announces. Without it, a mailbox that is exactly full is "not over quota" for
  a message of size 0: Postfix says 250, then LMTP bounces. With it, the recommended set-up
  (``[smtp] final = true`` against the quota-status listener) refuses at RCPT.
- ``NOTIFY=`` on ``RCPT TO`` (RFC 3461): a held job retried through a relay that is not final
  must not make a new bounce notice per retry; the outcome still comes from the followed log.

The stack is this module's own, so nothing else fills or empties its mailboxes meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from postwatch.delivery.worker import DeliveryWorker
from postwatch.outbox import retry_now
from postwatch.outbox.wake import wake
from postwatch.store import Database
from postwatch.store.events import fetch_events
from tests.delivery.conftest import drain
from tests.loop.test_e2e_mailstack import (
    BOUNCES,
    INFO,
    OWNER,
    Running,
    job,
    pw_config,
    state,
    submit,
)
from tests.mailstack import MailStack
from tests.watch.test_service import wait_for

pytestmark = pytest.mark.mailstack


@pytest.fixture(scope="module")
def stack(mailstack_factory: Callable[..., MailStack]) -> MailStack:
    return mailstack_factory(
        users=[(INFO, "info-pw", "200K"), (OWNER, "owner-pw", ""), (BOUNCES, "bounces-pw", "")]
    )


def test_exactly_full_mailbox_is_refused_at_rcpt(
    stack: MailStack, tmp_path: Path, sqlite_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The recommended set-up really is final: 552 at RCPT, held, fallback; no bounce later.
    The service log says so in words."""
    caplog.set_level(logging.INFO, logger="postwatch.delivery")
    stack.reset()
    stack.fill(INFO)
    used, limit = stack.quota(INFO)
    assert limit == 200 and used >= 199  # full to the last few hundred bytes
    cfg = pw_config(tmp_path, stack, sqlite_db, log=False)
    cfg.smtp.port = stack.rcpt_port
    cfg.smtp.final = True
    since = stack.log_offset()
    sid = submit(sqlite_db, cfg)
    assert drain(DeliveryWorker(cfg, sqlite_db)) == 2  # the lead, then its fallback copy
    info = job(sqlite_db, sid, INFO)
    assert info is not None and info.state == "held", info and info.last_reply
    assert info.last_reply is not None and info.last_reply.startswith("552 5.2.2")
    assert "Mailbox is full" in info.last_reply
    with sqlite_db.session(readonly=True) as s:
        [attempt] = [e.data for e in fetch_events(s, kinds=["delivery_attempt"])
                     if e.data["recipient"] == INFO]
    assert attempt["stage"] == "rcpt" and attempt["result"] == "held"
    stack.wait_log(r"NOQUEUE: reject: RCPT from .*552 5\.2\.2 <info@gym\.example>", since=since)
    assert state(sqlite_db, sid, OWNER) == "delivered"
    stack.wait_log(r"to=<owner@private\.example>.*status=sent", since=since)
    # nothing for info@ was queued, so nothing bounces after the fact
    text = stack.postfix_log.read_bytes()[since:].decode(errors="replace")
    assert "to=<info@gym.example>" not in text.replace("NOQUEUE", "").split("reject")[0]
    assert "status=bounced" not in text
    said = [r.getMessage() for r in caplog.records if r.name == "postwatch.delivery"]
    assert any(m.startswith(f"sign-up {sid} for {INFO}: mailbox full, held, next try ")
               and m.endswith(f"copy sent to {OWNER}") for m in said), said
    assert f"copy of sign-up {sid} for {OWNER}: delivered into the mailbox by " \
        f"127.0.0.1:{stack.rcpt_port}" in said, said


def notices_created(stack: MailStack, since: int) -> int:
    """Bounce notices Postfix sent after byte ``since`` of its log, counted when made (however
    long a notice then takes to reach the bounce mailbox). With ``NOTIFY=NEVER`` Postfix still
    opens a notice (a cleanup line) and then drops it: only "sender non-delivery
    notification" says one was sent."""
    text = stack.postfix_log.read_bytes()[since:].decode(errors="replace")
    return text.count("sender non-delivery notification")


async def test_held_retries_through_a_relay_make_no_bounce_notices(
    stack: MailStack, tmp_path: Path, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Relay (final = false), log followed and bounce mailbox watched: the first hand-over
    still asks for a bounce notice (a second witness, read by postwatch), the retries of the
    held job ask for none, and each retry's bounce is still learned from the log (held again)."""
    caplog.set_level(logging.INFO, logger="postwatch.delivery")
    stack.reset()
    stack.fill(INFO)
    cfg = pw_config(tmp_path, stack, db, log=True)
    async with Running(cfg, db, stack, log=True, bounces=True):
        since = stack.log_offset()
        sid = submit(db, cfg)
        await wait_for(lambda: state(db, sid, INFO) == "held", timeout=20)
        await wait_for(lambda: stack.message_count(OWNER) == 1, timeout=20)
        await wait_for(lambda: notices_created(stack, since) == 1, timeout=20)
        retries_from = stack.log_offset()
        for _ in range(3):
            since = stack.log_offset()
            before = job(db, sid, INFO)
            assert before is not None
            assert retry_now(db, recipient=INFO) == 1
            wake()
            await asyncio.to_thread(
                stack.wait_log, r"to=<info@gym\.example>.*status=bounced", since=since)

            def held_again(attempts: int = before.attempts) -> bool:
                j = job(db, sid, INFO)
                return j is not None and j.state == "held" and j.attempts > attempts

            await wait_for(held_again, timeout=20)
        # Postfix makes a notice right after the bounce; give it generous time anyway
        await asyncio.sleep(2)
    text = stack.postfix_log.read_bytes()[retries_from:].decode(errors="replace")
    assert text.count("status=bounced") == 3
    assert notices_created(stack, retries_from) == 0, text
    assert stack.message_count(OWNER) == 1
    # a relay's 250 is a hand-over, never "delivered"
    said = [r.getMessage() for r in caplog.records if r.name == "postwatch.delivery"]
    handed = [m for m in said if m.startswith(f"sign-up {sid} for {INFO}: handed to "
                                              f"127.0.0.1:{stack.smtp_port} (queued as ")]
    assert len(handed) == 4 and all(m.endswith("), not yet confirmed") for m in handed), said
    assert not any("delivered" in m for m in said if INFO in m), said
