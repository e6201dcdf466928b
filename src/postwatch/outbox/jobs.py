"""Delivery jobs: the rows of the transactional outbox, and the ways to take and give them back.

States (:class:`JobState`): ``pending`` (due at ``next_attempt_at``), ``sending`` (claimed:
``claimed_by`` holds it until ``claimed_until``, the lease), ``held`` (the recipient's mailbox is
full; retried every ``delivery.full_retry_every`` until ``hold_until``), ``delivered``,
``failed``, ``cancelled``. What an attempt did moves a job on through
:func:`postwatch.outbox.transitions.apply`, the one transition function.

Claiming is atomic on both stores. PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` picks due
rows no other transaction holds, then they are marked ``sending`` in the same transaction.
SQLite: writers are serialised by ``BEGIN IMMEDIATE`` and the ``UPDATE`` repeats the due
condition, so two workers never get the same row. A job whose lease expired (its worker died)
is due again; a restarted process on the same host takes its dead predecessor's claims back at
once (:func:`recover_claims`: the lease owner names host, boot and process).

A submission's jobs are built by :func:`job_rows` only (one job per recipient, each with its
own stable Message-ID) and written by :func:`enqueue` or, on intake's bound-SQL fast path, by
intake binding those same rows.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from postwatch.config import Config
from postwatch.outbox.ids import message_id
from postwatch.store import Database
from postwatch.store.models import Attachment, DeliveryJob, Submission, utcnow


class JobState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    HELD = "held"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobRole(StrEnum):
    PRIMARY = "primary"
    FALLBACK = "fallback"


#: states a job never leaves by itself
FINAL_STATES: tuple[JobState, ...] = (JobState.DELIVERED, JobState.FAILED, JobState.CANCELLED)
#: states of a job waiting for its next attempt
WAITING_STATES: tuple[JobState, ...] = (JobState.PENDING, JobState.HELD)


# --------------------------------------------------------------------------- building jobs

#: the columns of a job row, in the order :func:`job_rows` and intake's fast path bind them
JOB_COLUMNS = ("submission_id", "account", "form", "recipient", "role", "state", "attempts",
               "next_attempt_at", "message_id", "created_at", "updated_at")


def job_rows(
    submission_id: str,
    account: str,
    form: str,
    recipients: Iterable[str],
    *,
    sender: str,
    now: datetime,
    role: JobRole = JobRole.PRIMARY,
) -> list[tuple[Any, ...]]:
    """The job rows of a submission: one per recipient, due at ``now``, each with its
    Message-ID (:func:`postwatch.outbox.ids.message_id`). The one place that says what a new
    job is; each row has the values of :data:`JOB_COLUMNS` in that order (tuples: intake's
    fast path binds them as they are)."""
    pending = JobState.PENDING.value
    return [
        (submission_id, account, form, rcpt, role.value, pending, 0, now,
         message_id(submission_id, rcpt, sender), now, now)
        for rcpt in recipients
    ]


def enqueue(session: Session, rows: Sequence[Sequence[Any]]) -> list[str]:
    """Write job rows (from :func:`job_rows`) in the caller's transaction; a recipient that
    already has a job for the submission is skipped (each recipient once per submission).
    Returns the recipients added."""
    if not rows:
        return []
    session.flush()  # the submission first, when it is new in this transaction
    ins = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    added: list[str] = []
    for row in rows:
        values = dict(zip(JOB_COLUMNS, row, strict=True))
        stmt = ins(DeliveryJob).values(**values).on_conflict_do_nothing(
            index_elements=["submission_id", "recipient"]
        ).returning(DeliveryJob.id)
        if session.execute(stmt).first() is not None:
            added.append(str(values["recipient"]))
    return added


# --------------------------------------------------------------------------- lease owners


@cache
def _boot_id() -> str:
    with contextlib.suppress(OSError), open(
        "/proc/sys/kernel/random/boot_id", encoding="ascii"
    ) as fh:
        return fh.read().strip().replace("-", "")[:12] or "noboot"
    return "noboot"


_PROCESS_TAG = uuid.uuid4().hex[:8]


def lease_owner(n: int) -> str:
    """``host:boot:pid:tag:n``: who holds a claim, unique across processes and machines sharing
    one database. ``boot`` is the kernel's boot id, so a restarted machine's old claims and a
    dead process's claims can be told apart from a live one's (:func:`recover_claims`)."""
    return f"{socket.gethostname()[:64]}:{_boot_id()}:{os.getpid()}:{_PROCESS_TAG}:{n}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def owner_dead(owner: str) -> bool:
    """True if ``owner`` (a :func:`lease_owner`) is a process of this host that is gone: from
    an earlier boot, or its pid is not alive, or it is this pid with another tag (a container
    restarted its pid 1). Another host's owners, and owners of an older format, are not judged
    (they wait out their lease)."""
    parts = owner.split(":")
    if len(parts) != 5:
        return False
    host, boot, pid_s, tag, _n = parts
    if host != socket.gethostname()[:64] or not pid_s.isdigit():
        return False
    if boot != _boot_id():
        return True
    pid = int(pid_s)
    if pid == os.getpid():
        return tag != _PROCESS_TAG
    return not _pid_alive(pid)


def recover_claims(db: Database) -> int:
    """Give back at once the claims of dead processes of this host (see :func:`owner_dead`):
    called when a worker starts, so a ``kill -9`` and a restart do not leave leads waiting for
    the lease. Returns how many jobs were given back."""
    prefix = f"{socket.gethostname()[:64]}:"
    with db.session(readonly=True) as s:
        owners = set(s.scalars(
            select(DeliveryJob.claimed_by).where(
                DeliveryJob.state == JobState.SENDING,
                DeliveryJob.claimed_by.startswith(prefix, autoescape=True),
            ).distinct()
        ))
    dead = sorted(o for o in owners if o and owner_dead(o))
    return sum(release(db, o) for o in dead)


# --------------------------------------------------------------------------- claiming


@dataclass(frozen=True)
class AttachmentData:
    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class MailInput:
    """What composing needs, copied out of the store so no session is held while sending."""

    submission_id: str
    account: str
    form: str
    received_at: datetime
    fields: Mapping[str, Any]
    attachments: tuple[AttachmentData, ...]
    recipient: str
    role: str  # primary | fallback
    message_id: str
    #: for a fallback copy: (recipient that could not take it, why) pairs
    because: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Claimed:
    job_id: int
    mail: MailInput
    attempt: int  # the number this attempt will have
    #: the job's hold when it was claimed (None: not held), so the worker need not read the
    #: row again to choose a held retry's bounce notices
    hold_until: datetime | None = None


def _due(now: datetime) -> Any:
    return or_(
        and_(DeliveryJob.state.in_(WAITING_STATES), DeliveryJob.next_attempt_at <= now),
        and_(DeliveryJob.state == JobState.SENDING, DeliveryJob.claimed_until < now),
    )


def claim(db: Database, worker: str, lease: timedelta, limit: int = 1) -> list[Claimed]:
    """Claim up to ``limit`` due jobs for ``worker``; returns what is needed to send them."""
    now = utcnow()
    # a cheap read first: an idle poll must not take SQLite's write lock (nor fsync)
    with db.session(readonly=True) as s:
        if s.scalar(select(DeliveryJob.id).where(_due(now)).limit(1)) is None:
            return []
    with db.session() as s:
        q = select(DeliveryJob.id).where(_due(now)).order_by(DeliveryJob.next_attempt_at)
        q = q.limit(limit)
        if not db.is_sqlite:
            q = q.with_for_update(skip_locked=True)
        ids = list(s.scalars(q))
        if not ids:
            return []
        s.execute(
            update(DeliveryJob)
            .where(DeliveryJob.id.in_(ids), _due(now))
            .values(state=JobState.SENDING.value, claimed_by=worker,
                    claimed_until=now + lease, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        jobs = s.scalars(
            select(DeliveryJob).where(DeliveryJob.id.in_(ids), DeliveryJob.claimed_by == worker)
        ).all()
        return [_claimed(s, job) for job in jobs]


def _claimed(s: Session, job: DeliveryJob) -> Claimed:
    sub = s.get(Submission, job.submission_id)
    assert sub is not None
    atts = s.scalars(
        select(Attachment).where(Attachment.submission_id == sub.id).order_by(Attachment.id)
    ).all()
    because: tuple[tuple[str, str], ...] = ()
    if job.role == JobRole.FALLBACK:
        others = s.scalars(
            select(DeliveryJob).where(
                DeliveryJob.submission_id == sub.id,
                DeliveryJob.role == JobRole.PRIMARY.value,
                DeliveryJob.last_reason.is_not(None),
                DeliveryJob.state != JobState.DELIVERED.value,
            )
        ).all()
        because = tuple((o.recipient, o.last_reason or "") for o in others)
    mail = MailInput(
        submission_id=sub.id,
        account=sub.account,
        form=sub.form,
        received_at=sub.received_at,
        fields=dict(sub.fields),
        attachments=tuple(
            AttachmentData(a.field, a.filename, a.content_type, a.data) for a in atts
        ),
        recipient=job.recipient,
        role=job.role,
        message_id=job.message_id,
        because=because,
    )
    return Claimed(job.id, mail, job.attempts + 1, job.hold_until)


def release(db: Database, worker: str, job_ids: Sequence[int] = ()) -> int:
    """Give claimed jobs back (on shutdown): due again at once for any worker."""
    now = utcnow()
    with db.session() as s:
        q = update(DeliveryJob).where(
            DeliveryJob.state == JobState.SENDING.value, DeliveryJob.claimed_by == worker
        )
        if job_ids:
            q = q.where(DeliveryJob.id.in_(list(job_ids)))
        # a held job goes back to held (hold_until is set), the others to pending
        n = 0
        for held in (True, False):
            cond = DeliveryJob.hold_until.is_not(None) if held else DeliveryJob.hold_until.is_(None)
            res = s.execute(
                q.where(cond)
                .values(
                    state=(JobState.HELD if held else JobState.PENDING).value,
                    claimed_by=None,
                    claimed_until=None,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            n += int(getattr(res, "rowcount", 0) or 0)
        return n


def backoff(config: Config, attempt: int, rng: random.Random | None = None) -> timedelta:
    """Exponential backoff with full jitter between ``retry_base`` and ``retry_max``.

    The cap doubles with each attempt (base, 2 base, 4 base... up to retry_max) and the delay is
    drawn uniformly between ``retry_base`` and that cap, so retries of many jobs spread out.
    """
    d = config.delivery
    base = d.retry_base.total_seconds()
    cap = min(d.retry_max.total_seconds(), base * (2 ** max(0, min(attempt - 1, 40))))
    r = rng or random
    return timedelta(seconds=r.uniform(base, max(base, cap)))


def update_submission_status(s: Session, submission_id: str) -> None:
    """stored: nothing delivered yet and still trying; delivered: every primary recipient has
    it; partial: someone has it (a primary or a fallback) but not every primary; failed:
    nobody has it and nothing is left to try."""
    sub = s.get(Submission, submission_id)
    if sub is None or sub.status == "spam":
        return
    s.flush()
    jobs = s.scalars(select(DeliveryJob).where(DeliveryJob.submission_id == submission_id)).all()
    primary = [j for j in jobs if j.role == JobRole.PRIMARY]
    if primary and all(j.state == JobState.DELIVERED for j in primary):
        status = "delivered"
    elif any(j.state == JobState.DELIVERED for j in jobs):
        status = "partial"
    elif jobs and all(j.state in FINAL_STATES for j in jobs):
        status = "failed"
    else:
        status = "stored"
    sub.status = status


# --------------------------------------------------------------------------- operator actions


def queue(
    session: Session, *, include_done: bool = False, recipient: str | None = None,
    limit: int = 1000,
) -> list[DeliveryJob]:
    """Jobs not yet delivered or failed (all with ``include_done``), the next due first."""
    q = select(DeliveryJob)
    if not include_done:
        q = q.where(DeliveryJob.state.not_in(FINAL_STATES))
    if recipient:
        q = q.where(DeliveryJob.recipient == recipient.lower())
    q = q.order_by(DeliveryJob.next_attempt_at, DeliveryJob.id).limit(limit)
    return list(session.scalars(q))


def retry_now(
    db: Database, *, recipient: str | None = None, submission: str | None = None,
    account: str | None = None, form: str | None = None,
) -> int:
    """Make waiting (pending or held) jobs due at once, e.g. after a full mailbox was emptied.
    Holds and deadlines are kept; jobs being sent, delivered or failed are not touched."""
    now = utcnow()
    q = update(DeliveryJob).where(DeliveryJob.state.in_(WAITING_STATES))
    if recipient:
        q = q.where(DeliveryJob.recipient == recipient.lower())
    if submission:
        q = q.where(DeliveryJob.submission_id == submission)
    if account:
        q = q.where(DeliveryJob.account == account)
    if form:
        q = q.where(DeliveryJob.form == form)
    with db.session() as s:
        res = s.execute(
            q.values(next_attempt_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(res, "rowcount", 0) or 0)
