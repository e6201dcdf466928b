"""The one transition function, table-tested: every kind of report x every job state, on
SQLite and PostgreSQL.

Reports: the worker's own SMTP reply (through ``record``, which fences on the claim), an MTA
log line (live watch) and a DSN (bounce mailbox, ``classify-bounce --apply``). A report that
must change nothing leaves the job row exactly as it was and records no event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from postwatch.delivery.send import Reply
from postwatch.outbox import (
    Claimed,
    JobState,
    MailInput,
    Report,
    Reported,
    Result,
    Source,
    apply_downstream,
    record,
)
from postwatch.reasons import Reason, Verdict
from postwatch.store import Database
from postwatch.store.models import DeliveryJob, utcnow
from tests.outbox.helpers import (
    INFO,
    NEW,
    OLD,
    ago,
    event_count,
    events,
    job_row,
    new_job,
    outbox_config,
)

FULL = Verdict(Reason.MAILBOX_FULL, True, "5.2.2", 552)
UNKNOWN_USER = Verdict(Reason.USER_UNKNOWN, True, "5.1.1", 550)
NETWORK = Verdict(Reason.NETWORK, False, None, None)
LINE = "postfix/lmtp[1]: {q}: to=<info@gym.example>, status={s} ({r})"

S = JobState
ALL_STATES = tuple(JobState)

# ------------------------------------------------------------------------------ the reports

REPLIES: dict[str, Reply] = {
    "reply 250": Reply(True, 250, f"2.0.0 Ok: queued as {NEW}", None, "done"),
    "reply 452 full": Reply(False, 452, "4.2.2 Mailbox full",
                            Verdict(Reason.MAILBOX_FULL, False, "4.2.2", 452), "rcpt"),
    "reply 550 unknown": Reply(False, 550, "5.1.1 no such user", UNKNOWN_USER, "rcpt"),
    "reply no answer": Reply(False, None, "connection refused", NETWORK, "connect"),
}


def log(reported: Reported, verdict: Verdict | None, queue_id: str, status: str) -> Callable[
        [], Report]:
    return lambda: Report(
        Source.LOG, reported, verdict, LINE.format(q=queue_id, s=status, r=f"{reported} x"),
        "file:/var/log/mail.log", at=utcnow(), queue_id=queue_id, recipient=INFO,
    )


def dsn(verdict: Verdict, seconds_ago: float, reported: Reported = Reported.BOUNCED,
        key: str = "dsn:<bounce-1@relay.example>:info@gym.example") -> Callable[[], Report]:
    return lambda: Report(
        Source.DSN, reported, verdict, f"bounce {key}: {verdict.status}", "bounce:file:x",
        at=ago(seconds_ago), key=key, recipient=INFO,
    )


DOWNSTREAM: dict[str, Callable[[], Report]] = {
    "log sent": log(Reported.DELIVERED, None, NEW, "sent"),
    "log bounced full": log(Reported.BOUNCED, FULL, NEW, "bounced"),
    "log bounced unknown": log(Reported.BOUNCED, UNKNOWN_USER, NEW, "bounced"),
    "log deferred": log(Reported.DEFERRED, NETWORK, NEW, "deferred"),
    "log expired": log(Reported.EXPIRED, NETWORK, NEW, "expired"),
    "log bounced full, older hand-over": log(Reported.BOUNCED, FULL, OLD, "bounced"),
    "dsn full": dsn(FULL, 0),
    "dsn unknown user": dsn(UNKNOWN_USER, 0),
    "dsn full, dated before the latest hand-over": dsn(FULL, 3600),
}

# ------------------------------------------------------------------------------ the table
# (report, state) -> (result, state after); anything not listed: "ignored", unchanged

NOTHING = (Result.IGNORED, None)
TABLE: dict[tuple[str, JobState], tuple[Result, JobState | None]] = {
    # the worker's reply: only while it holds the claim (else "lost", the job untouched)
    **{(r, st): (Result.LOST, None) for r in REPLIES for st in ALL_STATES if st is not S.SENDING},
    ("reply 250", S.SENDING): (Result.DELIVERED, S.DELIVERED),
    ("reply 452 full", S.SENDING): (Result.HELD, S.HELD),
    ("reply 550 unknown", S.SENDING): (Result.FAILED, S.FAILED),
    ("reply no answer", S.SENDING): (Result.DEFERRED, S.PENDING),
    # status=sent: confirms whatever the job waits for (a job being sent again keeps its claim)
    **{("log sent", st): (Result.CONFIRMED, S.DELIVERED) for st in ALL_STATES},
    ("log sent", S.SENDING): (Result.CONFIRMED, S.SENDING),
    # failures after the 250: only for the latest hand-over of a delivered (or re-sent) job
    ("log bounced full", S.DELIVERED): (Result.HELD, S.HELD),
    ("log bounced full", S.SENDING): (Result.HELD, S.HELD),  # the new hand-over's bounce
    ("log bounced unknown", S.DELIVERED): (Result.FAILED, S.FAILED),
    ("log bounced unknown", S.SENDING): (Result.FAILED, S.FAILED),
    ("log deferred", S.DELIVERED): (Result.DEFERRED, S.DELIVERED),  # the MTA retries
    ("log deferred", S.SENDING): (Result.DEFERRED, S.SENDING),
    ("log expired", S.DELIVERED): (Result.FAILED, S.FAILED),
    ("log expired", S.SENDING): (Result.FAILED, S.FAILED),
    ("dsn full", S.DELIVERED): (Result.HELD, S.HELD),
    ("dsn unknown user", S.DELIVERED): (Result.FAILED, S.FAILED),
    # "log bounced full, older hand-over" and "dsn ..., dated before": ignored in every state
}




def test_every_report_in_every_state(tmp_path: Path, db: Database) -> None:
    cfg = outbox_config(tmp_path, db)
    wrong: list[str] = []
    for name in [*REPLIES, *DOWNSTREAM]:
        for state in ALL_STATES:
            sid, job_id = new_job(db, cfg, state)
            before, n_events = job_row(db, job_id), event_count(db)
            if name in REPLIES:
                mail = MailInput(sid, "gym", "contact", utcnow(), {}, (), INFO, "primary",
                                 "<x@y>")
                got = record(db, cfg, "w1", Claimed(job_id, mail, 2), REPLIES[name]).result
            else:
                with db.session() as s:
                    job = s.get(DeliveryJob, job_id)
                    assert job is not None
                    got = apply_downstream(s, cfg, DOWNSTREAM[name](), job.message_id).result
            after = job_row(db, job_id)
            result, new_state = TABLE.get((name, state), NOTHING)
            if got != result:
                wrong.append(f"{name} on {state}: {got}, expected {result}")
            if new_state is None and after != before:
                wrong.append(f"{name} on {state}: the job changed: {before} -> {after}")
            if new_state is not None and after["state"] != new_state:
                wrong.append(f"{name} on {state}: state {after['state']}, expected {new_state}")
            if got in (Result.IGNORED, Result.DUPLICATE) and event_count(db) != n_events:
                wrong.append(f"{name} on {state}: {got} but recorded events")
    assert not wrong, "\n".join(wrong)


def test_same_report_twice_changes_nothing_the_second_time(tmp_path: Path, db: Database) -> None:
    cfg = outbox_config(tmp_path, db)
    for name in DOWNSTREAM:
        _sid, job_id = new_job(db, cfg, S.DELIVERED)
        report = DOWNSTREAM[name]()
        with db.session() as s:
            job = s.get(DeliveryJob, job_id)
            assert job is not None
            mid = job.message_id
            apply_downstream(s, cfg, report, mid)
        once, n_events = job_row(db, job_id), event_count(db)
        with db.session() as s:
            again = apply_downstream(s, cfg, report, mid).result
        assert again in (Result.DUPLICATE, Result.IGNORED), name
        assert job_row(db, job_id) == once, name
        assert event_count(db) == n_events, name


def test_dsn_after_the_log_line_of_the_same_attempt_changes_nothing(
    tmp_path: Path, db: Database
) -> None:
    """The watch applied the log line (held, fallback queued); the DSN of the same bounce comes
    later, and again after the job was retried and handed over anew: nothing moves, nothing is
    queued for the fallback twice."""
    cfg = outbox_config(tmp_path, db)
    _sid, job_id = new_job(db, cfg, S.DELIVERED)
    with db.session() as s:
        job = s.get(DeliveryJob, job_id)
        assert job is not None
        mid = job.message_id
        assert apply_downstream(s, cfg, DOWNSTREAM["log bounced full"](), mid).result == "held"
    bounce_at = utcnow()
    held, n_events = job_row(db, job_id), event_count(db)
    the_dsn = dsn(FULL, 0)()
    with db.session() as s:
        assert apply_downstream(s, cfg, the_dsn, mid).result == Result.IGNORED
    assert job_row(db, job_id) == held and event_count(db) == n_events
    # the retry is handed over anew (a later 250) ...
    with db.session() as s:
        job = s.get(DeliveryJob, job_id)
        assert job is not None
        job.state, job.attempts = S.DELIVERED, job.attempts + 1
        job.delivered_at = bounce_at + timedelta(minutes=15)
        job.last_reply = "250 2.0.0 Ok: queued as 5NEWER2"
    delivered, n_events = job_row(db, job_id), event_count(db)
    # ... and the old DSN arrives again (classify-bounce --apply on the processed folder)
    for _ in range(2):
        with db.session() as s:
            assert apply_downstream(s, cfg, the_dsn, mid).result in (
                Result.IGNORED, Result.DUPLICATE)
        assert job_row(db, job_id) == delivered and event_count(db) == n_events
    assert len(events(db, "delivery_fallback")) == 1
    assert len(events(db, "delivery_held")) == 1


def test_one_attempt_payload_shape(tmp_path: Path, db: Database) -> None:
    """Every ``delivery_attempt``, whoever reported it, has the same keys."""
    cfg = outbox_config(tmp_path, db)
    sid, job_id = new_job(db, cfg, S.SENDING)
    mail = MailInput(sid, "gym", "contact", utcnow(), {}, (), INFO, "primary", "<x@y>")
    record(db, cfg, "w1", Claimed(job_id, mail, 2), REPLIES["reply 250"])
    with db.session() as s:
        job = s.get(DeliveryJob, job_id)
        assert job is not None
        job.last_reply = f"250 2.0.0 Ok: queued as {NEW}"
        apply_downstream(s, cfg, DOWNSTREAM["log bounced full"](), job.message_id)
    shapes = {tuple(sorted(e.data)) for e in events(db, "delivery_attempt")}
    assert len(events(db, "delivery_attempt")) == 2 and len(shapes) == 1
    vias = [e.data["via"] for e in events(db, "delivery_attempt")]
    assert vias == ["reply", "log"]
