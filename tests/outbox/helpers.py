"""Helpers of the outbox kernel tests: a config, a job put into a given state, reports."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from postwatch.config import Config
from postwatch.intake.submissions import NewSubmission, store_submission
from postwatch.outbox import JobState
from postwatch.store import Database
from postwatch.store.models import DeliveryJob, Event, utcnow
from tests.conftest import make_config

INFO = "info@gym.example"
OWNER = "owner@private.example"
#: the relay's queue id of the job's latest hand-over, and of the one before
NEW, OLD = "4NEW111", "3OLD000"


def outbox_config(tmp_path: Path, db: Database, *, final: bool = False) -> Config:
    return make_config(
        tmp_path,
        database={"url": db.url},
        smtp={"host": "127.0.0.1", "port": 9, "sender": "postwatch@hoster.example",
              "final": final},
        delivery={"retry_base": "1s", "retry_max": "10s", "give_up_after": "1h",
                  "full_retry_every": "1s", "full_horizon": "7d"},
    )


def new_job(db: Database, config: Config, state: JobState) -> tuple[str, int]:
    """A submission whose info@ job is in ``state`` as the worker would have left it:
    ``sending`` (claimed by ``w1``, its previous hand-over ``OLD``), ``held`` (a full mailbox),
    ``delivered`` (handed over as ``NEW`` 10 s ago), ``failed``, ``cancelled``, ``pending``."""
    found = config.form("gym/contact")
    assert found is not None
    account, form = found
    sid = store_submission(db, config, NewSubmission(
        account=account, form=form, fields={"email": "jan@example.org", "message": "Hallo"},
    )).id
    now = utcnow()
    with db.session() as s:
        job = s.scalar(select(DeliveryJob).where(DeliveryJob.submission_id == sid,
                                                 DeliveryJob.recipient == INFO))
        assert job is not None
        job.state = state
        if state is JobState.SENDING:
            job.attempts = 1
            job.claimed_by, job.claimed_until = "w1", now + timedelta(minutes=5)
            job.last_reply = f"250 2.0.0 Ok: queued as {OLD}"
        elif state is JobState.HELD:
            job.attempts = 1
            job.hold_until = now + timedelta(days=7)
            job.next_attempt_at = now + timedelta(seconds=1)
            job.last_reason = "mailbox_full"
            job.last_reply = "552 5.2.2 Mailbox full"
        elif state is JobState.DELIVERED:
            job.attempts = 1
            job.delivered_at = now - timedelta(seconds=10)
            job.last_reply = f"250 2.0.0 Ok: queued as {NEW}"
        elif state in (JobState.FAILED, JobState.CANCELLED):
            job.attempts = 1
            job.last_reason = "user_unknown"
        return sid, job.id


def job_row(db: Database, job_id: int) -> dict[str, Any]:
    with db.session(readonly=True) as s:
        job = s.get(DeliveryJob, job_id)
        assert job is not None
        return {c: getattr(job, c) for c in (
            "state", "attempts", "claimed_by", "hold_until", "next_attempt_at", "last_reply",
            "last_reason", "delivered_at")}


def event_count(db: Database) -> int:
    with db.session(readonly=True) as s:
        return len(list(s.scalars(select(Event.id))))


def events(db: Database, kind: str) -> list[Event]:
    with db.session(readonly=True) as s:
        return list(s.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))


def ago(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)
