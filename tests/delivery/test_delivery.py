"""Delivery against a real aiosmtpd server, on SQLite and PostgreSQL.

The worker is driven step by step (``drain``): tests check what happens, never how long it takes;
waiting delays are skipped by moving ``next_attempt_at`` to now (``make_due``).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from postwatch.config import Config
from postwatch.delivery.send import Reply
from postwatch.delivery.worker import DeliveryWorker
from postwatch.intake.submissions import UploadedFile
from postwatch.outbox import claim, message_id, record, release
from postwatch.store import Database
from postwatch.store.events import fetch_events
from postwatch.store.models import DeliveryJob, Submission, utcnow
from tests.delivery.conftest import delivery_config, drain, jobs, make_due, submit
from tests.smtpd import SmtpSink

INFO = "info@gym.example"
OWNER = "owner@private.example"


def events(db: Database, kind: str) -> list[dict[str, object]]:
    with db.session(readonly=True) as s:
        return [dict(e.data, _mailbox=e.mailbox) for e in fetch_events(s, kinds=[kind])]


def status(db: Database, sid: str) -> str:
    with db.session(readonly=True) as s:
        sub = s.get(Submission, sid)
        assert sub is not None
        return sub.status


# --------------------------------------------------------------------------- happy path


def test_happy_path_message_on_the_wire(db: Database, dconfig: Config, smtp_sink: SmtpSink) -> None:
    fields = {
        "name": "Zoë Çelik",
        "email": "Zoe@Example.org",
        "phone": "+31 6 1234 5678",
        "message": "Ik wil graag <b>proefles</b> & info.\nTweede regel: ✓",
        "subject": "Proefles?",
        "interests": ["yoga", "spinning"],
    }
    sid = submit(db, dconfig, fields)
    assert drain(DeliveryWorker(dconfig, db)) == 1

    [got] = smtp_sink.messages
    msg = got.message
    assert got.rcpt_tos == [INFO]
    assert got.mail_from == "postwatch@hoster.example"
    assert msg["To"] == INFO
    assert msg["From"].addresses[0].addr_spec == "postwatch@hoster.example"
    assert msg["Reply-To"].addresses[0].addr_spec == "Zoe@example.org"
    assert msg["Reply-To"].addresses[0].display_name == "Zoë Çelik"
    assert msg["Message-ID"] == message_id(sid, INFO, "postwatch@hoster.example")
    assert msg["X-Postwatch-Submission"] == sid
    assert msg["Date"] is not None
    assert msg["Auto-Submitted"] is None  # a real lead, not an automatic message
    assert "Proefles?" in msg["Subject"] and "contact" in msg["Subject"]

    plain = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    for text in ("Zoë Çelik", "Zoe@Example.org", "+31 6 1234 5678", "Tweede regel: ✓",
                 "yoga, spinning"):
        assert text in plain
    assert "<b>proefles</b> &amp; info." not in html
    assert "&lt;b&gt;proefles&lt;/b&gt; &amp; info.<br>Tweede regel: ✓" in html
    assert "<b>" not in html

    job = jobs(db, sid)[INFO]
    assert job.state == "delivered" and job.attempts == 1 and job.delivered_at is not None
    assert status(db, sid) == "delivered"
    [ev] = events(db, "delivery_attempt")
    assert ev["result"] == "delivered" and ev["recipient"] == INFO and ev["role"] == "primary"
    assert ev["message_id"] == job.message_id and str(ev["reply"]).startswith("250")


def test_helo_name(tmp_path: Path, db: Database, smtp_sink: SmtpSink) -> None:
    cfg = delivery_config(tmp_path, smtp_sink, db)
    cfg.smtp.helo = "forms.hoster.example"
    submit(db, cfg)
    drain(DeliveryWorker(cfg, db))
    assert [m.helo for m in smtp_sink.messages] == ["forms.hoster.example"]


def test_attachments(db: Database, dconfig: Config, smtp_sink: SmtpSink) -> None:
    files = [
        UploadedFile("cv", "../../etc/Curriculum vitæ.pdf", "application/pdf", b"%PDF-1.4 x"),
        UploadedFile("photo", "a\r\nb.png", "image/png\r\nX-Evil: 1", b"\x89PNG\r\n\x1a\n"),
    ]
    submit(db, dconfig, {"email": "a@b.org", "message": "see files"}, files=files)
    drain(DeliveryWorker(dconfig, db))
    [got] = smtp_sink.messages
    atts = list(got.message.iter_attachments())
    assert [a.get_filename() for a in atts] == ["Curriculum vitæ.pdf", "a b.png"]
    assert atts[0].get_content_type() == "application/pdf"
    assert atts[0].get_content() == b"%PDF-1.4 x"
    assert atts[1].get_content_type() == "application/octet-stream"  # bad type not trusted
    assert atts[1].get_content() == b"\x89PNG\r\n\x1a\n"
    assert "X-Evil" not in got.message


# --------------------------------------------------------------------------- mailbox full


@pytest.mark.parametrize("fault", ["full452", "full552"])
def test_mailbox_full_holds_and_falls_back_at_once(
    db: Database, tmp_path: Path, smtp_sink: SmtpSink, fault: str
) -> None:
    # retries only when the test makes them due (make_due): a slow machine must not add one
    dconfig = delivery_config(tmp_path, smtp_sink, db, full_retry_every="1h")
    smtp_sink.set(INFO, fault)
    worker = DeliveryWorker(dconfig, db)
    sids = [submit(db, dconfig, {"email": f"v{i}@example.org", "n": str(i)}) for i in range(3)]
    drain(worker)

    # every submission reached the fallback, once, and info@ is held
    owner_mail = smtp_sink.received_by(OWNER)
    assert sorted(m.message["X-Postwatch-Submission"] for m in owner_mail) == sorted(sids)
    for m in owner_mail:
        assert m.message["X-Postwatch-Fallback-For"] == INFO
        assert "[copy]" in m.message["Subject"]
        assert INFO in m.message.get_body(("plain",)).get_content()
    assert smtp_sink.received_by(INFO) == []
    for sid in sids:
        js = jobs(db, sid)
        assert js[INFO].state == "held" and js[INFO].last_reason == "mailbox_full"
        assert js[INFO].hold_until is not None
        assert js[INFO].hold_until - js[INFO].updated_at == timedelta(days=7)
        assert js[OWNER].state == "delivered" and js[OWNER].role == "fallback"
        assert status(db, sid) == "partial"
    held = events(db, "delivery_held")
    assert len(held) == 3 and {h["recipient"] for h in held} == {INFO}
    fb = events(db, "delivery_fallback")
    assert len(fb) == 3 and all(f["fallback"] == [OWNER] for f in fb)
    assert all(f["reason"] == "mailbox_full" for f in fb)
    assert len(events(db, "mailbox_full")) == 1  # one episode for the watched mailbox
    attempts = [e for e in events(db, "delivery_attempt") if e["recipient"] == INFO]
    assert {e["result"] for e in attempts} == {"held"}
    assert {e["status"] for e in attempts} == {"4.2.2" if fault == "full452" else "5.2.2"}

    # still full on the slower retry: still held, the fallback is not sent again
    make_due(db)
    drain(worker)
    assert len(smtp_sink.received_by(OWNER)) == 3
    assert all(jobs(db, sid)[INFO].state == "held" for sid in sids)
    assert all(jobs(db, sid)[INFO].attempts == 2 for sid in sids)
    assert len(events(db, "delivery_held")) == 3

    # info@ has room again: each submission delivered there exactly once
    smtp_sink.set(INFO, "accept")
    make_due(db)
    drain(worker)
    info_mail = smtp_sink.received_by(INFO)
    assert sorted(m.message["X-Postwatch-Submission"] for m in info_mail) == sorted(sids)
    for sid in sids:
        assert jobs(db, sid)[INFO].state == "delivered"
        assert status(db, sid) == "delivered"
    [rec] = events(db, "mailbox_recovered")
    assert rec["_mailbox"] == INFO


def test_mailbox_full_fallback_once_per_submission_with_two_primaries(
    tmp_path: Path, db: Database, smtp_sink: SmtpSink
) -> None:
    cfg = delivery_config(tmp_path, smtp_sink, db)
    cfg.accounts[0].forms[0].recipients = [INFO, "sales@gym.example"]
    smtp_sink.set(INFO, "full552")
    smtp_sink.set("sales@gym.example", "unknown")
    sid = submit(db, cfg)
    drain(DeliveryWorker(cfg, db))
    assert len(smtp_sink.received_by(OWNER)) == 1
    js = jobs(db, sid)
    assert js[OWNER].state == "delivered"
    assert js["sales@gym.example"].state == "failed"
    assert js[INFO].state == "held"
    because = smtp_sink.received_by(OWNER)[0].message["X-Postwatch-Fallback-For"]
    assert INFO in because or "sales@gym.example" in because


def test_full_horizon_expiry(db: Database, dconfig: Config, smtp_sink: SmtpSink) -> None:
    smtp_sink.set(INFO, "full452")
    sid = submit(db, dconfig)
    worker = DeliveryWorker(dconfig, db)
    drain(worker)
    assert jobs(db, sid)[INFO].state == "held"
    # the horizon passes (7 days after the first full reply) while the mailbox stays full
    with db.session() as s:
        s.execute(update(DeliveryJob).where(DeliveryJob.recipient == INFO)
                  .values(hold_until=utcnow() - timedelta(seconds=1)))
    make_due(db)
    drain(worker)
    job = jobs(db, sid)[INFO]
    assert job.state == "failed" and job.last_reason == "expired"
    [exp] = events(db, "delivery_expired")
    assert exp["recipient"] == INFO and exp["last_reason"] == "mailbox_full"
    assert len(smtp_sink.received_by(OWNER)) == 1  # the fallback got it once, at the first reply
    assert status(db, sid) == "partial"


def test_fallback_recipient_full_is_held_too(
    db: Database, dconfig: Config, smtp_sink: SmtpSink
) -> None:
    smtp_sink.set(INFO, "full552")
    smtp_sink.set(OWNER, "full452")
    sid = submit(db, dconfig)
    drain(DeliveryWorker(dconfig, db))
    js = jobs(db, sid)
    assert js[INFO].state == "held" and js[OWNER].state == "held"
    assert len(js) == 2  # no fallback of a fallback
    assert status(db, sid) == "stored"


# --------------------------------------------------------------------------- permanent failures


def test_user_unknown_fails_and_falls_back(
    db: Database, dconfig: Config, smtp_sink: SmtpSink
) -> None:
    smtp_sink.set(INFO, "unknown")
    sid = submit(db, dconfig)
    worker = DeliveryWorker(dconfig, db)
    drain(worker)
    js = jobs(db, sid)
    assert js[INFO].state == "failed" and js[INFO].last_reason == "user_unknown"
    assert js[INFO].last_reply is not None and js[INFO].last_reply.startswith("550 5.1.1")
    assert js[OWNER].state == "delivered"
    [att] = [e for e in events(db, "delivery_attempt") if e["recipient"] == INFO]
    assert att["result"] == "failed" and att["permanent"] is True and att["status"] == "5.1.1"
    [fb] = events(db, "delivery_fallback")
    assert fb["reason"] == "user_unknown" and fb["added"] == [OWNER]
    assert status(db, sid) == "partial"
    make_due(db)
    assert drain(worker) == 0  # a failed job is never tried again


def test_everything_fails(db: Database, dconfig: Config, smtp_sink: SmtpSink) -> None:
    smtp_sink.set_default("unknown")
    sid = submit(db, dconfig)
    drain(DeliveryWorker(dconfig, db))
    assert status(db, sid) == "failed"
    assert {j.state for j in jobs(db, sid).values()} == {"failed"}


# --------------------------------------------------------------------------- temporary failures


@pytest.mark.parametrize("fault", ["drop", "stall", "shutdown"])
def test_temporary_failure_is_retried(
    db: Database, dconfig: Config, smtp_sink: SmtpSink, fault: str
) -> None:
    smtp_sink.set(INFO, fault)
    sid = submit(db, dconfig)
    worker = DeliveryWorker(dconfig, db)
    before = utcnow()
    drain(worker)
    job = jobs(db, sid)[INFO]
    assert job.state == "pending" and job.attempts == 1
    assert job.last_reason == "network"
    wait = job.next_attempt_at - before
    assert timedelta(seconds=1) <= wait <= timedelta(seconds=1) + (utcnow() - before)
    assert OWNER not in jobs(db, sid)  # no fallback for a temporary failure
    [att] = events(db, "delivery_attempt")
    assert att["result"] == "deferred" and att["permanent"] is False

    smtp_sink.set(INFO, "accept")
    make_due(db)
    drain(worker)
    [got] = smtp_sink.received_by(INFO)
    assert got.message_id == job.message_id  # the retry is the same mail
    assert jobs(db, sid)[INFO].state == "delivered"
    assert status(db, sid) == "delivered"


def test_connection_refused_is_temporary(tmp_path: Path, db: Database) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        cfg = delivery_config(tmp_path, port, db)
        sid = submit(db, cfg)
        drain(DeliveryWorker(cfg, db))
    job = jobs(db, sid)[INFO]
    assert job.state == "pending" and job.last_reason == "network"
    assert "ConnectionRefusedError" in (job.last_reply or "")


def test_give_up_after_expires_and_falls_back(
    db: Database, dconfig: Config, smtp_sink: SmtpSink
) -> None:
    smtp_sink.set(INFO, "shutdown")
    sid = submit(db, dconfig)
    worker = DeliveryWorker(dconfig, db)
    drain(worker)
    with db.session() as s:
        s.execute(update(DeliveryJob).values(created_at=utcnow() - timedelta(hours=2)))
    make_due(db)
    drain(worker)
    js = jobs(db, sid)
    assert js[INFO].state == "failed" and js[INFO].last_reason == "expired"
    assert js[OWNER].state == "delivered"
    [exp] = events(db, "delivery_expired")
    assert exp["last_reason"] == "network" and exp["attempts"] == 2
    [fb] = events(db, "delivery_fallback")
    assert fb["reason"] == "expired"


def test_relay_refusing_our_sender_is_not_permanent(
    db: Database, dconfig: Config, smtp_sink: SmtpSink
) -> None:
    """A 5xx to MAIL FROM is about postwatch's relay, not the recipient: retry, no failure."""
    smtp_sink.set_default("refuse_mail")
    sid = submit(db, dconfig)
    drain(DeliveryWorker(dconfig, db))
    job = jobs(db, sid)[INFO]
    assert job.state == "pending" and job.attempts == 1
    assert OWNER not in jobs(db, sid)


def test_backoff_grows_with_full_jitter(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    import random

    from postwatch.outbox import backoff

    cfg = delivery_config(tmp_path, smtp_sink, retry_base="30s", retry_max="1h")
    rng = random.Random(7)
    for attempt, cap in ((1, 30), (2, 60), (3, 120), (8, 3600), (50, 3600)):
        delays = [backoff(cfg, attempt, rng).total_seconds() for _ in range(200)]
        assert min(delays) >= 30 and max(delays) <= cap
        if cap > 30:
            assert max(delays) - min(delays) > (cap - 30) / 2  # really spread out


# --------------------------------------------------------------------------- claiming


def test_claim_is_exclusive_and_leases_expire(db: Database, dconfig: Config) -> None:
    submit(db, dconfig)
    [a] = claim(db, "worker-a", timedelta(seconds=30))
    assert claim(db, "worker-b", timedelta(seconds=30)) == []
    # worker-a dies; its lease runs out; worker-b reclaims the job
    with db.session() as s:
        s.execute(update(DeliveryJob).values(claimed_until=utcnow() - timedelta(seconds=1)))
    [b] = claim(db, "worker-b", timedelta(seconds=30))
    assert b.job_id == a.job_id and b.mail.message_id == a.mail.message_id
    ok = Reply(True, 250, "OK", None, "done")
    # the late result of worker-a is fenced out; worker-b's counts
    assert record(db, dconfig, "worker-a", a, ok).result == "lost"
    assert record(db, dconfig, "worker-b", b, ok).result == "delivered"
    late, counted = events(db, "delivery_attempt")
    assert late["late"] is True and late["worker"] == "worker-a"  # audit trail: both sends
    assert counted["worker"] == "worker-b" and counted["attempt"] == 1
    assert jobs(db)[next(iter(jobs(db)))].attempts == 1


def test_release_gives_claims_back(db: Database, dconfig: Config, smtp_sink: SmtpSink) -> None:
    smtp_sink.set(INFO, "full452")
    submit(db, dconfig)
    drain(DeliveryWorker(dconfig, db))  # info@ held, owner@ delivered
    submit(db, dconfig)
    make_due(db)
    claimed = claim(db, "w", timedelta(minutes=5), limit=10)
    assert len(claimed) == 2
    assert release(db, "w") == 2
    with db.session(readonly=True) as s:
        states = sorted(s.scalars(select(DeliveryJob.state).where(
            DeliveryJob.recipient == INFO)))
    assert states == ["held", "pending"]


def test_many_workers_one_store_no_double_sends(
    db: Database, dconfig: Config, smtp_sink: SmtpSink
) -> None:
    import threading

    sids = [submit(db, dconfig, {"email": f"v{i}@example.org"}) for i in range(30)]
    workers = [DeliveryWorker(dconfig, db, n) for n in range(1, 6)]
    threads = [threading.Thread(target=drain, args=(w, 100)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    ids = [m.message_id for m in smtp_sink.messages]
    assert len(ids) == 30 and len(set(ids)) == 30
    assert all(status(db, sid) == "delivered" for sid in sids)
