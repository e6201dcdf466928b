"""The outbox side of delivery: claiming due jobs, and recording what an attempt did.

Job states: ``pending`` (due at ``next_attempt_at``), ``sending`` (claimed: ``claimed_by`` holds it
until ``claimed_until``, the lease), ``held`` (the recipient's mailbox is full; retried every
``delivery.full_retry_every`` until ``hold_until``), ``delivered``, ``failed``.

Claiming is atomic on both stores. PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` picks due
rows no other transaction holds, then they are marked ``sending`` in the same transaction.
SQLite: writers are serialised by ``BEGIN IMMEDIATE`` and the ``UPDATE`` repeats the due
condition, so two workers never get the same row. A job whose lease expired (its worker died)
is due again. Every result is written only if the job is still claimed by the same worker (a
fence), in one transaction with its events, the held state and any fallback jobs.

A crash after the SMTP server accepted a mail but before the result was committed sends that
mail again once the lease expires, with the same ``Message-ID`` (per submission and recipient),
so mail clients and the recipient can recognise the duplicate. No other path sends twice.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from postwatch import episodes
from postwatch.config import Config
from postwatch.delivery.compose import AttachmentData, MailInput
from postwatch.delivery.send import Reply
from postwatch.intake.submissions import message_id
from postwatch.reasons import Reason, Verdict
from postwatch.store import Database
from postwatch.store.events import record_event
from postwatch.store.models import Attachment, DeliveryJob, Event, Submission, utcnow

log = logging.getLogger("postwatch.delivery")

FINAL_STATES = ("delivered", "failed", "cancelled")


@dataclass(frozen=True)
class Claimed:
    job_id: int
    mail: MailInput
    attempt: int  # the number this attempt will have


def _due(now: datetime) -> Any:
    return or_(
        and_(DeliveryJob.state.in_(("pending", "held")), DeliveryJob.next_attempt_at <= now),
        and_(DeliveryJob.state == "sending", DeliveryJob.claimed_until < now),
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
            .values(state="sending", claimed_by=worker, claimed_until=now + lease, updated_at=now)
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
    if job.role == "fallback":
        others = s.scalars(
            select(DeliveryJob).where(
                DeliveryJob.submission_id == sub.id,
                DeliveryJob.role == "primary",
                DeliveryJob.last_reason.is_not(None),
                DeliveryJob.state != "delivered",
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
    return Claimed(job.id, mail, job.attempts + 1)


def release(db: Database, worker: str, job_ids: Sequence[int] = ()) -> int:
    """Give claimed jobs back (on shutdown): due again at once for any worker."""
    now = utcnow()
    with db.session() as s:
        q = update(DeliveryJob).where(
            DeliveryJob.state == "sending", DeliveryJob.claimed_by == worker
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
                    state="held" if held else "pending",
                    claimed_by=None,
                    claimed_until=None,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            n += int(getattr(res, "rowcount", 0) or 0)
        return n


# --------------------------------------------------------------------------- results


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


@dataclass(frozen=True)
class Outcome:
    result: str  # delivered | deferred | held | failed | lost (claim taken over: not recorded)
    reason: str | None = None


def record(
    db: Database, config: Config, worker: str, claimed: Claimed, reply: Reply
) -> Outcome:
    """Write the attempt's result, its events, the hold and the fallback: one transaction."""
    now = utcnow()
    with db.session() as s:
        q = select(DeliveryJob).where(DeliveryJob.id == claimed.job_id)
        if not db.is_sqlite:
            q = q.with_for_update()
        job = s.scalar(q)
        if job is None:  # the submission was purged meanwhile
            return Outcome("lost")
        if job.state != "sending" or job.claimed_by != worker:
            log.warning(
                "job %s: lease lost before the result was recorded (now %s by %s); reply was %s",
                job.id, job.state, job.claimed_by, reply.line,
            )
            # the job now belongs to another worker; the audit trail still gets this attempt
            v = reply.verdict
            record_event(
                s, "delivery_attempt", account=job.account, mailbox=job.recipient,
                form=job.form, at=now,
                data={"submission": job.submission_id, "job": job.id,
                      "recipient": job.recipient, "role": job.role, "attempt": None,
                      "result": "delivered" if reply.delivered else "deferred",
                      "code": reply.code, "status": v.status if v else None,
                      "reason": v.reason.value if v else None,
                      "permanent": v.permanent if v else None, "reply": reply.line,
                      "message_id": job.message_id, "stage": reply.stage, "worker": worker,
                      "late": True},
            )
            return Outcome("lost")
        outcome = _apply(s, config, job, reply, now, worker)
        _update_submission_status(s, job.submission_id)
        return outcome


def _apply(
    s: Session, config: Config, job: DeliveryJob, reply: Reply, now: datetime, worker: str
) -> Outcome:
    d = config.delivery
    job.attempts += 1
    job.claimed_by = None
    job.claimed_until = None
    job.updated_at = now
    job.last_reply = reply.line
    verdict = reply.verdict
    watched = config.mailbox_account(job.recipient) is not None
    base: dict[str, Any] = {
        "submission": job.submission_id,
        "job": job.id,
        "recipient": job.recipient,
        "role": job.role,
        "attempt": job.attempts,
        "code": reply.code,
        "reply": reply.line,
        "message_id": job.message_id,
        "stage": reply.stage,
        "worker": worker,
        # a relay's 250 ([smtp] final = false) means "queued there", not "in the mailbox"
        "final": config.smtp.final,
    }

    def attempt_event(result: str) -> None:
        data = {
            **base,
            "result": result,
            "status": verdict.status if verdict else _status_of(reply),
            "reason": verdict.reason.value if verdict else None,
            "permanent": verdict.permanent if verdict else None,
        }
        record_event(s, "delivery_attempt", account=job.account, mailbox=job.recipient,
                     form=job.form, data=data, at=now)

    if reply.delivered or verdict is None:
        job.state = "delivered"
        job.delivered_at = now
        job.last_reason = None
        attempt_event("delivered")
        # only a final server's 250 means "in the mailbox"; a relay's 250 means "queued", and
        # the mailbox's episode is closed by the relay's own log (status=sent) via the watch
        if watched and config.smtp.final:
            episodes.delivery_succeeded(
                s, account=job.account, mailbox=job.recipient,
                data={"evidence": reply.line, "source": "delivery",
                      "submission": job.submission_id},
                at=now,
            )
        return Outcome("delivered")

    reason = verdict.reason.value
    job.last_reason = reason

    if verdict.reason is Reason.MAILBOX_FULL:
        if watched:
            episodes.mailbox_full_seen(
                s, account=job.account, mailbox=job.recipient,
                data={"reason": reason, "status": verdict.status, "evidence": reply.line,
                      "source": "delivery", "submission": job.submission_id},
                at=now,
            )
        first = job.hold_until is None
        if first:
            job.hold_until = now + d.full_horizon
        assert job.hold_until is not None
        if now >= job.hold_until:
            attempt_event("failed")
            _expire(s, config, job, now, reason)
            return Outcome("failed", "expired")
        job.state = "held"
        job.next_attempt_at = min(now + d.full_retry_every, job.hold_until)
        attempt_event("held")
        if first:
            record_event(
                s, "delivery_held", account=job.account, mailbox=job.recipient, form=job.form,
                data={"submission": job.submission_id, "job": job.id, "recipient": job.recipient,
                      "reason": reason, "until": job.hold_until.isoformat(),
                      "status": verdict.status, "reply": reply.line},
                at=now,
            )
            _fallback(s, config, job, reason, now)
        return Outcome("held", reason)

    if verdict.permanent:
        job.state = "failed"
        attempt_event("failed")
        _fallback(s, config, job, reason, now)
        return Outcome("failed", reason)

    # temporary: retry with backoff until the deadline (the hold's end for a held job)
    deadline = job.hold_until or (job.created_at + d.give_up_after)
    if now >= deadline:
        attempt_event("failed")
        _expire(s, config, job, now, reason)
        return Outcome("failed", "expired")
    if job.hold_until is not None:
        job.state = "held"
        job.next_attempt_at = min(now + d.full_retry_every, deadline)
    else:
        job.state = "pending"
        job.next_attempt_at = min(now + backoff(config, job.attempts), deadline)
    attempt_event("deferred")
    return Outcome("deferred", reason)


def _status_of(reply: Reply) -> str | None:
    from postwatch.reasons import extract_status

    return extract_status(reply.text) if reply.code is not None else None


def _expire(s: Session, config: Config, job: DeliveryJob, now: datetime, last_reason: str) -> None:
    job.state = "failed"
    job.last_reason = Reason.EXPIRED.value
    record_event(
        s, "delivery_expired", account=job.account, mailbox=job.recipient, form=job.form,
        data={"submission": job.submission_id, "job": job.id, "recipient": job.recipient,
              "role": job.role, "reason": Reason.EXPIRED.value, "last_reason": last_reason,
              "attempts": job.attempts, "last_reply": job.last_reply,
              "since": job.created_at.isoformat()},
        at=now,
    )
    _fallback(s, config, job, Reason.EXPIRED.value, now)


def _fallback(
    s: Session, config: Config, job: DeliveryJob, reason: str, now: datetime
) -> list[str]:
    """Queue the submission for the form's fallback recipients (each once per submission)."""
    if job.role != "primary":
        return []
    cfg = config
    found = cfg.form(f"{job.account}/{job.form}")
    if found is None:
        log.warning("job %s: form %s/%s gone from the config; no fallback",
                    job.id, job.account, job.form)
        return []
    _account, form = found
    targets = [r for r in form.fallback if r != job.recipient]
    if not targets:
        log.warning("job %s: %s cannot take the submission (%s) and form %s has no fallback",
                    job.id, job.recipient, reason, form.id)
        return []
    added: list[str] = []
    for rcpt in targets:
        values = {
            "submission_id": job.submission_id,
            "account": job.account,
            "form": job.form,
            "recipient": rcpt,
            "role": "fallback",
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "message_id": message_id(job.submission_id, rcpt, cfg.smtp.sender),
            "created_at": now,
            "updated_at": now,
        }
        ins = (postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert)
        stmt = ins(DeliveryJob).values(**values).on_conflict_do_nothing(
            index_elements=["submission_id", "recipient"]
        ).returning(DeliveryJob.id)
        if s.execute(stmt).first() is not None:
            added.append(rcpt)
    record_event(
        s, "delivery_fallback", account=job.account, mailbox=job.recipient, form=job.form,
        data={"submission": job.submission_id, "recipient": job.recipient, "fallback": targets,
              "added": added, "reason": reason},
        at=now,
    )
    return added


def _update_submission_status(s: Session, submission_id: str) -> None:
    """stored: nothing delivered yet and still trying; delivered: every primary recipient has
    it; partial: someone has it (a primary or a fallback) but not every primary; failed:
    nobody has it and nothing is left to try."""
    sub = s.get(Submission, submission_id)
    if sub is None or sub.status == "spam":
        return
    s.flush()
    jobs = s.scalars(select(DeliveryJob).where(DeliveryJob.submission_id == submission_id)).all()
    primary = [j for j in jobs if j.role == "primary"]
    if primary and all(j.state == "delivered" for j in primary):
        status = "delivered"
    elif any(j.state == "delivered" for j in jobs):
        status = "partial"
    elif jobs and all(j.state in FINAL_STATES for j in jobs):
        status = "failed"
    else:
        status = "stored"
    sub.status = status


# --------------------------------------------------------------------------- downstream
# What the MTA did with a mail after its 250 (its log, or the DSN it sent back), by Message-ID.

_QUEUED_AS = re.compile(r"queued as ([0-9A-Za-z]+)")
_OWN_LOCAL = re.compile(r"^[A-Za-z0-9_-]{6,64}\.[0-9a-f]{12}$")


def own_domain(config: Config) -> str:
    """The domain of postwatch's Message-IDs (the ``[smtp] sender``'s domain)."""
    return (config.smtp.sender.rpartition("@")[2] or "postwatch.invalid").lower()


def normalise_message_id(message_id: str) -> str:
    mid = message_id.strip()
    return mid if mid.startswith("<") else f"<{mid}>"


def own_submission(message_id: str | None, domain: str) -> str | None:
    """The submission id if ``message_id`` has the shape of postwatch's own Message-IDs
    (``<SUBMISSION.HASH12@domain>``), else None. No database access: cheap for every line."""
    if not message_id:
        return None
    mid = message_id.strip().strip("<>")
    local, at, dom = mid.rpartition("@")
    if not at or dom.lower() != domain or not _OWN_LOCAL.match(local):
        return None
    return local.rsplit(".", 1)[0]


@dataclass(frozen=True)
class Downstream:
    """What :func:`downstream_outcome` did: ``confirmed``, ``held``, ``failed``, ``deferred``
    (recorded only: the MTA retries), ``duplicate`` (this evidence was seen before),
    ``ignored`` (the job already moved on: held, failed, being resent...), ``unknown`` (no
    job has that Message-ID)."""

    result: str
    job: int | None = None
    reason: str | None = None


def downstream_outcome(
    session: Session,
    config: Config,
    *,
    message_id: str,
    recipient: str | None,
    outcome: str,
    verdict: Verdict | None,
    evidence: str,
    source: str,
    at: datetime | None = None,
    queue_id: str | None = None,
    key: str | None = None,
) -> Downstream:
    """Apply what the MTA reported after accepting a job's mail, with the rules of a direct
    SMTP reply (see docs/delivery.md, "After the 250"), in the caller's transaction.

    ``outcome``: ``delivered`` (Postfix ``status=sent``), ``deferred``, ``bounced``,
    ``expired``. ``queue_id``: the MTA's queue id when known (the log): an outcome for an
    older hand-over than the job's last one is ignored. ``key`` identifies the evidence (default:
    a hash of source and evidence); the same key twice changes nothing the second time.
    """
    now = utcnow()
    at = at or now
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    mid = normalise_message_id(message_id)
    sub_id = own_submission(mid, own_domain(config))
    if sub_id is None:
        return Downstream("unknown")
    q = select(DeliveryJob).where(
        DeliveryJob.submission_id == sub_id, DeliveryJob.message_id == mid
    )
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    job = session.scalar(q)
    if job is None:
        return Downstream("unknown")
    key = key or hashlib.sha256(f"{source}\n{evidence}".encode()).hexdigest()[:24]
    if _downstream_seen(session, job, key):
        return Downstream("duplicate", job.id)
    reason = verdict.reason.value if verdict else None
    base: dict[str, Any] = {
        "submission": job.submission_id, "job": job.id, "recipient": job.recipient,
        "role": job.role, "attempt": job.attempts, "message_id": mid,
        "stage": "downstream", "outcome": outcome, "code": verdict.code if verdict else None,
        "status": verdict.status if verdict else None, "reason": reason,
        "permanent": verdict.permanent if verdict else None,
        "reply": evidence[-500:], "evidence": evidence, "source": source,
        "queue_id": queue_id, "logged_recipient": recipient, "key": key,
    }

    if outcome == "delivered":
        changed = job.state not in ("delivered", "sending")
        if job.state != "sending":
            job.state = "delivered"
            job.delivered_at = at
            job.last_reason = None
            job.claimed_by = job.claimed_until = None
            job.updated_at = now
        record_event(session, "delivery_confirmed", account=job.account, mailbox=job.recipient,
                     form=job.form, data={**base, "result": "delivered", "changed": changed},
                     at=at)
        _update_submission_status(session, job.submission_id)
        return Downstream("confirmed", job.id)

    # a failure: only for the job's latest hand-over, and only while it waits for an outcome
    handed = _queued_as(job.last_reply)
    if job.state == "delivered":
        if queue_id and handed and queue_id != handed:
            return Downstream("ignored", job.id, "older hand-over")
    elif job.state == "sending":
        # being sent again; an outcome for the previous hand-over (or of unknown origin) waits
        if not queue_id or queue_id == handed:
            return Downstream("ignored", job.id, "being sent again")
    else:
        return Downstream("ignored", job.id, f"job is {job.state}")

    def attempt_event(result: str) -> None:
        record_event(session, "delivery_attempt", account=job.account, mailbox=job.recipient,
                     form=job.form, data={**base, "result": result}, at=at)

    full = verdict is not None and verdict.reason is Reason.MAILBOX_FULL
    if outcome == "deferred" and not full:
        attempt_event("deferred")  # the MTA retries by itself
        return Downstream("deferred", job.id, reason)

    d = config.delivery
    job.claimed_by = None
    job.claimed_until = None
    job.updated_at = now
    job.delivered_at = None
    job.last_reply = evidence[-1000:]
    job.last_reason = reason or Reason.OTHER.value
    result: Downstream
    if outcome == "expired":
        attempt_event("failed")
        _expire(session, config, job, now, reason or Reason.EXPIRED.value)
        result = Downstream("failed", job.id, Reason.EXPIRED.value)
    elif full:
        first = job.hold_until is None
        if first:
            job.hold_until = now + d.full_horizon
        assert job.hold_until is not None
        if now >= job.hold_until:
            attempt_event("failed")
            _expire(session, config, job, now, Reason.MAILBOX_FULL.value)
            result = Downstream("failed", job.id, Reason.EXPIRED.value)
        else:
            job.state = "held"
            job.next_attempt_at = min(now + d.full_retry_every, job.hold_until)
            attempt_event("held")
            if first:
                record_event(
                    session, "delivery_held", account=job.account, mailbox=job.recipient,
                    form=job.form, at=at,
                    data={"submission": job.submission_id, "job": job.id,
                          "recipient": job.recipient, "reason": Reason.MAILBOX_FULL.value,
                          "until": job.hold_until.isoformat(),
                          "status": verdict.status if verdict else None,
                          "reply": evidence[-500:], "stage": "downstream", "source": source},
                )
                _fallback(session, config, job, Reason.MAILBOX_FULL.value, now)
            result = Downstream("held", job.id, Reason.MAILBOX_FULL.value)
    else:
        job.state = "failed"
        attempt_event("failed")
        _fallback(session, config, job, job.last_reason, now)
        result = Downstream("failed", job.id, job.last_reason)
    _update_submission_status(session, job.submission_id)
    return result


def _queued_as(reply: str | None) -> str | None:
    m = _QUEUED_AS.search(reply or "")
    return m.group(1) if m else None


def _downstream_seen(session: Session, job: DeliveryJob, key: str) -> bool:
    recent = session.scalars(
        select(Event)
        .where(Event.kind.in_(("delivery_attempt", "delivery_confirmed")),
               Event.mailbox == job.recipient.lower())
        .order_by(Event.id.desc())
        .limit(500)
    )
    return any(e.data.get("key") == key and e.data.get("job") == job.id for e in recent)


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
    q = update(DeliveryJob).where(DeliveryJob.state.in_(("pending", "held")))
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
