"""``apply_downstream``: what the MTA did after its 250, on SQLite and PostgreSQL.

The job is first really sent (the worker, a real aiosmtpd server answering 250 like a relay
that queues); then the MTA's outcome is applied as the watch or the bounce reader would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from postwatch.config import Config
from postwatch.delivery.worker import DeliveryWorker
from postwatch.outbox import (
    Report,
    Reported,
    Source,
    apply_downstream,
    own_domain,
    own_submission,
)
from postwatch.reasons import Reason, Verdict
from postwatch.store import Database
from postwatch.store.events import fetch_events
from postwatch.store.models import DeliveryJob, Submission
from tests.delivery.conftest import delivery_config, drain, jobs, make_due, submit
from tests.smtpd import SmtpSink

INFO = "info@gym.example"
OWNER = "owner@private.example"
FULL = Verdict(Reason.MAILBOX_FULL, True, "5.2.2", 552)
FULL_TEMP = Verdict(Reason.MAILBOX_FULL, False, "4.2.2", 452)
UNKNOWN = Verdict(Reason.USER_UNKNOWN, True, "5.1.1", 550)
NETWORK = Verdict(Reason.NETWORK, False, "4.4.1", None)

LINE = (
    "Nov 29 19:00:01 mail postfix/lmtp[4]: 4ABC123: to=<info@gym.example>, relay=x, "
    "dsn={dsn}, status={status} (host x said: {reply})"
)


@pytest.fixture
def relay_config(tmp_path: Path, smtp_sink: SmtpSink, db: Database) -> Config:
    cfg = delivery_config(tmp_path, smtp_sink, db)
    cfg.smtp.final = False  # the sink answers like a queueing relay
    return cfg


def handed_over(db: Database, cfg: Config) -> tuple[str, str]:
    """A submission sent to info@ (250 from the relay): (submission id, message id)."""
    sid = submit(db, cfg)
    assert drain(DeliveryWorker(cfg, db)) == 1
    job = jobs(db, sid)[INFO]
    assert job.state == "delivered"
    return sid, job.message_id


def apply(db: Database, cfg: Config, mid: str, outcome: str, verdict: Verdict | None,
          evidence: str, **kw: Any) -> str:
    via = Source.DSN if str(kw.get("key") or "").startswith("dsn:") else Source.LOG
    report = Report(via, Reported(outcome), verdict, evidence, "file:/var/log/mail.log",
                    recipient=INFO, **kw)
    with db.session() as s:
        return apply_downstream(s, cfg, report, mid).result


def kinds(db: Database) -> list[str]:
    with db.session(readonly=True) as s:
        return [e.kind for e in fetch_events(s)]


def snapshot(db: Database, sid: str) -> tuple[Any, ...]:
    with db.session(readonly=True) as s:
        rows = s.query(DeliveryJob).filter_by(submission_id=sid).order_by(DeliveryJob.id).all()
        sub = s.get(Submission, sid)
        assert sub is not None
        n = len(fetch_events(s))
        return (tuple((j.recipient, j.state, j.next_attempt_at, j.hold_until) for j in rows),
                sub.status, n)


def test_own_message_ids_are_recognised_without_the_store(relay_config: Config) -> None:
    dom = own_domain(relay_config)
    assert dom == "hoster.example"
    sid = "0190f2aa11bb22cc33dd44ee55ff6677"
    assert own_submission(f"<{sid}.0123456789ab@hoster.example>", dom) == sid
    assert own_submission(f"{sid}.0123456789ab@HOSTER.example", dom) == sid
    assert own_submission(f"<{sid}.0123456789ab@other.example>", dom) is None
    assert own_submission("<CAF=x+y@mail.gmail.com>", dom) is None
    assert own_submission("<1234.5678@hoster.example>", dom) is None
    assert own_submission(None, dom) is None


@pytest.mark.parametrize("fault", ["bounce552", "defer452"])
def test_mailbox_full_after_250_holds_and_falls_back_once(
    db: Database, relay_config: Config, smtp_sink: SmtpSink, fault: str
) -> None:
    cfg = relay_config
    sid, mid = handed_over(db, cfg)
    if fault == "bounce552":
        line = LINE.format(dsn="5.2.2", status="bounced",
                           reply="552 5.2.2 <info@gym.example> Quota exceeded")
        res = apply(db, cfg, mid, "bounced", FULL, line, queue_id="4ABC123")
    else:
        line = LINE.format(dsn="4.2.2", status="deferred",
                           reply="452 4.2.2 <info@gym.example> Mailbox is full")
        res = apply(db, cfg, mid, "deferred", FULL_TEMP, line, queue_id="4ABC123")
    assert res == "held"
    j = jobs(db, sid)
    assert j[INFO].state == "held" and j[INFO].hold_until is not None
    assert j[INFO].delivered_at is None and j[INFO].last_reason == "mailbox_full"
    assert j[OWNER].role == "fallback" and j[OWNER].state == "pending"
    assert kinds(db).count("delivery_held") == 1 and kinds(db).count("delivery_fallback") == 1
    with db.session(readonly=True) as s:
        [att] = [e for e in fetch_events(s, kinds=["delivery_attempt"])
                 if e.data.get("stage") == "downstream"]
        assert att.data["result"] == "held" and att.data["evidence"] == line
        assert att.data["message_id"] == mid and att.data["queue_id"] == "4ABC123"

    # the same line again (a re-read, or the DSN after the log): nothing changes
    before = snapshot(db, sid)
    assert apply(db, cfg, mid, "bounced", FULL, line, queue_id="4ABC123") == "duplicate"
    assert apply(db, cfg, mid, "bounced", FULL, "the DSN of it", key="dsn:<x@y>:info") in (
        "ignored",
    )
    assert snapshot(db, sid) == before

    # the fallback goes out; the held retry resends with the same Message-ID
    make_due(db)
    drain(DeliveryWorker(cfg, db))
    assert len(smtp_sink.received_by(OWNER)) == 1
    ids = [m.message["Message-ID"] for m in smtp_sink.received_by(INFO)]
    assert ids == [mid, mid]
    j = jobs(db, sid)
    assert j[INFO].state == "delivered" and j[INFO].hold_until is not None

    # still full: the new hand-over bounces too -> held again, no second fallback
    line2 = line.replace("4ABC123", "5DEF456").replace("19:00:01", "19:15:01")
    assert apply(db, cfg, mid, "bounced", FULL, line2, queue_id="5DEF456") == "held"
    assert kinds(db).count("delivery_fallback") == 1
    assert kinds(db).count("delivery_held") == 1
    assert len(jobs(db, sid)) == 2


def test_sent_confirms_delivery(db: Database, relay_config: Config) -> None:
    cfg = relay_config
    sid, mid = handed_over(db, cfg)
    line = LINE.format(dsn="2.0.0", status="sent", reply="250 2.0.0 <info@gym.example> Saved")
    assert apply(db, cfg, mid, "delivered", None, line, queue_id="4ABC123") == "confirmed"
    assert apply(db, cfg, mid, "delivered", None, line, queue_id="4ABC123") == "duplicate"
    j = jobs(db, sid)[INFO]
    assert j.state == "delivered" and j.delivered_at is not None
    assert kinds(db).count("delivery_confirmed") == 1
    # a confirmation also ends a hold: the MTA's own retry got the mail in
    with db.session() as s:
        job = s.get(DeliveryJob, j.id)
        assert job is not None
        job.state = "held"
    line2 = line.replace("19:00:01", "19:20:00")
    assert apply(db, cfg, mid, "delivered", None, line2, queue_id="4ABC123") == "confirmed"
    assert jobs(db, sid)[INFO].state == "delivered"


def test_permanent_bounce_fails_and_falls_back(db: Database, relay_config: Config) -> None:
    cfg = relay_config
    sid, mid = handed_over(db, cfg)
    line = LINE.format(dsn="5.1.1", status="bounced", reply="550 5.1.1 User unknown")
    assert apply(db, cfg, mid, "bounced", UNKNOWN, line, queue_id="4ABC123") == "failed"
    j = jobs(db, sid)
    assert j[INFO].state == "failed" and j[INFO].last_reason == "user_unknown"
    assert j[OWNER].state == "pending"
    assert kinds(db).count("delivery_fallback") == 1
    with db.session(readonly=True) as s:
        sub = s.get(Submission, sid)
        assert sub is not None and sub.status == "stored"  # the fallback is still to be sent


def test_plain_deferral_is_recorded_only_then_expired_fails(
    db: Database, relay_config: Config
) -> None:
    cfg = relay_config
    sid, mid = handed_over(db, cfg)
    line = LINE.format(dsn="4.4.1", status="deferred", reply="connect to x: Connection refused")
    assert apply(db, cfg, mid, "deferred", NETWORK, line, queue_id="4ABC123") == "deferred"
    j = jobs(db, sid)
    assert j[INFO].state == "delivered" and OWNER not in j  # the MTA retries by itself
    assert apply(db, cfg, mid, "deferred", NETWORK, line, queue_id="4ABC123") == "duplicate"
    exp = ("Nov 30 19:00:01 mail postfix/qmgr[3]: 4ABC123: from=<postwatch@hoster.example>, "
           "status=expired, returned to sender")
    expired = Verdict(Reason.NETWORK, True, "4.4.1", None)
    assert apply(db, cfg, mid, "expired", expired, exp, queue_id="4ABC123") == "failed"
    j = jobs(db, sid)
    assert j[INFO].state == "failed" and j[INFO].last_reason == "expired"
    assert j[OWNER].state == "pending"
    assert kinds(db).count("delivery_expired") == 1


def test_outcome_of_an_older_hand_over_or_unknown_id_changes_nothing(
    db: Database, relay_config: Config
) -> None:
    cfg = relay_config
    sid, mid = handed_over(db, cfg)
    with db.session() as s:  # the relay said which queue id it gave the mail
        job = s.get(DeliveryJob, jobs(db, sid)[INFO].id)
        assert job is not None
        job.last_reply = "250 2.0.0 Ok: queued as 9NEW999"
    before = snapshot(db, sid)
    line = LINE.format(dsn="5.2.2", status="bounced", reply="552 5.2.2 Quota exceeded")
    assert apply(db, cfg, mid, "bounced", FULL, line, queue_id="4ABC123") == "ignored"
    other = mid.replace("@hoster.example", "@elsewhere.example")
    assert apply(db, cfg, other, "bounced", FULL, line) == "unknown"
    assert apply(db, cfg, mid.replace(sid, "f" * 32), "bounced", FULL, line) == "unknown"
    assert snapshot(db, sid) == before


def test_relay_250_does_not_close_an_episode_but_a_final_server_does(
    tmp_path: Path, db: Database, smtp_sink: SmtpSink
) -> None:
    from postwatch.observations import mailbox_full_seen

    for final, expected in ((False, 0), (True, 1)):
        cfg = delivery_config(tmp_path, smtp_sink, db)
        cfg.smtp.final = final
        with db.session() as s:
            mailbox_full_seen(s, account="gym", mailbox=INFO, data={"evidence": "x"})
        handed_over(db, cfg)
        assert kinds(db).count("mailbox_recovered") == expected


def test_bounce_seen_while_the_worker_still_holds_the_job(
    db: Database, relay_config: Config
) -> None:
    """The log line can be stored before the worker records the relay's 250: the bounce of
    the new hand-over wins, the worker's late 250 is only an audit event."""
    from datetime import timedelta

    from postwatch.delivery.send import Reply
    from postwatch.outbox import claim, record

    cfg = relay_config
    sid = submit(db, cfg)
    [c] = claim(db, "w1", timedelta(minutes=5))
    mid = c.mail.message_id
    line = LINE.format(dsn="5.2.2", status="bounced", reply="552 5.2.2 Quota exceeded")
    # without a queue id it cannot be told from an older hand-over: left alone
    assert apply(db, cfg, mid, "bounced", FULL, line) == "ignored"
    assert jobs(db, sid)[INFO].state == "sending"
    assert apply(db, cfg, mid, "bounced", FULL, line, queue_id="4ABC123") == "held"
    out = record(db, cfg, "w1", c, Reply(True, 250, "2.0.0 Ok: queued as 4ABC123", None, "done"))
    assert out.result == "lost"
    j = jobs(db, sid)
    assert j[INFO].state == "held" and j[OWNER].state == "pending"
    with db.session(readonly=True) as s:
        late = [e.data for e in fetch_events(s, kinds=["delivery_attempt"]) if e.data.get("late")]
    assert len(late) == 1 and late[0]["result"] == "delivered"
