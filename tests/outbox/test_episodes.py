"""The episode rule of postwatch.observations with the outbox: a 250 that is a hand-over does
not close an episode (issue 10, item 5), and an episode counts each attempt once (item 3)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from postwatch import observations
from postwatch.delivery.send import Reply
from postwatch.observations import Observation, ObservationKind
from postwatch.outbox import Claimed, JobState, MailInput, record
from postwatch.reasons import Reason, Verdict
from postwatch.store import Database
from postwatch.store.models import DeliveryJob, utcnow
from postwatch.watch.detect import store_observations
from tests.outbox.helpers import INFO, NEW, events, new_job, outbox_config

OK = Reply(True, 250, f"2.0.0 Ok: queued as {NEW}", None, "done")
FULL_AT_RCPT = Reply(False, 452, "4.2.2 Mailbox full",
                     Verdict(Reason.MAILBOX_FULL, False, "4.2.2", 452), "rcpt")


def _send(db: Database, cfg_path: Path, reply: Reply, final: bool) -> int:
    """One worker attempt of a fresh job with ``reply``; returns the job id."""
    cfg = outbox_config(cfg_path, db, final=final)
    sid, job_id = new_job(db, cfg, JobState.SENDING)
    mail = MailInput(sid, "gym", "contact", utcnow(), {}, (), INFO, "primary", "<x@y>")
    record(db, cfg, "w1", Claimed(job_id, mail, 2), reply)
    return job_id


def _log_line(status: str, reason: Reason | None, queue_id: str = NEW) -> Observation:
    data = {"mailbox": INFO, "outcome": status, "evidence": f"{queue_id}: status={status}",
            "source": "file:/var/log/mail.log", "queue_id": queue_id,
            "key": observations.evidence_key("file:/var/log/mail.log", f"{queue_id} {status}")}
    if reason is not None:
        data["reason"] = reason.value
    kind = ObservationKind.DELIVERED if status == "sent" else ObservationKind.FAILED
    return Observation(kind, INFO, "gym", utcnow(), data)


def test_a_final_servers_250_after_it_bounced_is_a_hand_over(tmp_path: Path, db: Database) -> None:
    """Postfix + Dovecot's quota policy at RCPT: the server says 250, then LMTP bounces. Its
    250s must not close the episode (no open/close flip on every retry); its status=sent does."""
    with db.session() as s:
        store_observations(s, [_log_line("bounced", Reason.MAILBOX_FULL)])
    assert len(events(db, "mailbox_full")) == 1
    for _ in range(3):  # the retries: 250 each time, then bounced again
        _send(db, tmp_path, OK, final=True)
        with db.session() as s:
            store_observations(s, [_log_line("bounced", Reason.MAILBOX_FULL, queue_id="5X")])
    assert events(db, "mailbox_recovered") == []
    assert len(events(db, "mailbox_full")) == 1
    with db.session() as s:
        store_observations(s, [_log_line("sent", None, queue_id="6OK")])
    assert len(events(db, "mailbox_recovered")) == 1


def test_a_final_servers_250_closes_an_episode_it_refused_at_rcpt(
    tmp_path: Path, db: Database
) -> None:
    _send(db, tmp_path, FULL_AT_RCPT, final=True)
    assert len(events(db, "mailbox_full")) == 1
    _send(db, tmp_path, OK, final=True)
    assert len(events(db, "mailbox_recovered")) == 1


def test_a_relays_250_closes_nothing(tmp_path: Path, db: Database) -> None:
    _send(db, tmp_path, FULL_AT_RCPT, final=True)
    _send(db, tmp_path, OK, final=False)
    assert events(db, "mailbox_recovered") == []


def test_recovered_counts_each_attempt_once(tmp_path: Path, db: Database) -> None:
    """One hand-over that bounced, reported by the log line (the watched mailbox's event and
    the job's) and by the DSN, and one refusal at RCPT: two failed attempts, not five."""
    from postwatch.outbox import Report, Reported, Source, apply_downstream

    cfg = outbox_config(tmp_path, db, final=True)
    _send(db, tmp_path, FULL_AT_RCPT, final=True)  # attempt 1 of job A: refused at RCPT
    _sid, job_id = new_job(db, cfg, JobState.DELIVERED)  # job B, handed over as NEW
    with db.session() as s:
        job = s.get(DeliveryJob, job_id)
        assert job is not None
        mid = job.message_id
    line = f"{NEW}: to=<{INFO}>, status=bounced (552 5.2.2 Quota exceeded)"
    src = "file:/var/log/mail.log"
    full = Verdict(Reason.MAILBOX_FULL, True, "5.2.2", 552)
    watched = Observation(ObservationKind.FAILED, INFO, "gym", utcnow(), {
        "mailbox": INFO, "outcome": "bounced", "reason": "mailbox_full", "evidence": line,
        "source": src, "queue_id": NEW, "key": observations.evidence_key(src, line)})
    with db.session() as s:
        store_observations(s, [watched])
        apply_downstream(s, cfg, Report(Source.LOG, Reported.BOUNCED, full, line, src,
                                        queue_id=NEW, recipient=INFO), mid)
    with db.session() as s:  # the DSN of the same bounce: the job has moved on (held)
        job = s.get(DeliveryJob, job_id)
        assert job is not None and job.state == "held"
        job.state, job.delivered_at = JobState.DELIVERED, utcnow() - timedelta(seconds=5)
        job.last_reply = f"250 2.0.0 Ok: queued as {NEW}"
        apply_downstream(s, cfg, Report(Source.DSN, Reported.BOUNCED, full, "the DSN",
                                        "bounce:x", key="dsn:<d@r>:info@gym.example",
                                        recipient=INFO), mid)
    with db.session() as s:
        store_observations(s, [_log_line("sent", None, queue_id="6OK")])
    [rec] = events(db, "mailbox_recovered")
    assert rec.data["failures"] == 2
