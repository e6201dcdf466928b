"""The delivery-job state machine: ONE transition function for everything that says what
happened to a job's mail.

What can report on a job (:class:`Source`): the worker's own SMTP reply (``reply``), the MTA's
log line for the mail it accepted (``log``), a DSN that came back (``dsn``). Each becomes a
:class:`Report` and goes through :func:`apply`, which, in the caller's transaction:

- **confirms** (``delivered``): a reply's 250 delivers the job (a relay's 250 with
  ``[smtp] final = false`` is a hand-over: the job is delivered, the mailbox's episode is not
  closed by it); an MTA's ``status=sent`` confirms it (``delivery_confirmed``);
- **holds** a mailbox-full failure until ``hold_until`` (first hold: ``delivery_held`` and the
  fallback copy), retried every ``full_retry_every``;
- **expires** a job whose deadline passed (``delivery_expired`` and the fallback);
- **fails** a permanent failure (and a bounce after the 250) with the fallback;
- **defers** a temporary reply with backoff (a downstream deferral is recorded only: the MTA
  retries by itself).

Every attempt is one ``delivery_attempt`` event with one payload shape (:func:`attempt_data`).

Guarantees for reports after the 250 (``log`` / ``dsn``): the same report twice (its ``key``)
changes nothing; a failure reported for an older hand-over than the job's latest (another queue
id, or a report dated before the latest hand-over) changes nothing; once an outcome of a
hand-over was applied (the job moved to held or failed), a later report of the same hand-over
changes nothing (the job is no longer waiting for it). So re-reading an already processed
bounce folder never re-holds, never re-sends, never fires.

The worker's reply is fenced: it is written only while the worker still holds the claim;
otherwise the attempt is kept in the audit trail (``late``) and the job is left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from postwatch import observations
from postwatch.config import Config
from postwatch.lead_words import LeadOutcome, lead_outcome_words
from postwatch.outbox.ids import normalise_message_id, own_domain, own_submission, queued_as
from postwatch.outbox.jobs import (
    Claimed,
    JobRole,
    JobState,
    backoff,
    enqueue,
    job_rows,
    update_submission_status,
)
from postwatch.reasons import Reason, Verdict, extract_status
from postwatch.store import Database
from postwatch.store.events import EventKind, record_event
from postwatch.store.models import DeliveryJob, Event, utcnow

log = logging.getLogger("postwatch.delivery")

#: a report without the relay's queue id dated this much before the job's latest hand-over is
#: about an earlier one (another host's clock, one-second resolution; retries of a held job
#: are ``full_retry_every`` apart, 15 minutes by default)
HANDOVER_SLACK = timedelta(seconds=30)
#: the same report twice has the same time: look for its key this close to it
SAME_REPORT = timedelta(seconds=2)


class Source(StrEnum):
    """Who reports on a job's mail."""

    REPLY = "reply"  # the worker's own SMTP reply
    LOG = "log"  # the MTA's log line (live watch)
    DSN = "dsn"  # a delivery status notification (bounce mailbox, classify-bounce --apply)


class Reported(StrEnum):
    """What the report says happened."""

    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    EXPIRED = "expired"


class Result(StrEnum):
    """What :func:`apply` did."""

    DELIVERED = "delivered"  # a reply's 250
    CONFIRMED = "confirmed"  # the MTA's status=sent
    HELD = "held"
    FAILED = "failed"
    DEFERRED = "deferred"
    DUPLICATE = "duplicate"  # this report was applied before
    IGNORED = "ignored"  # the job moved on (an older hand-over, already settled, held...)
    LOST = "lost"  # the claim was taken over (a late reply) or the job is gone
    UNKNOWN = "unknown"  # no job has that Message-ID


@dataclass(frozen=True)
class Transition:
    result: Result
    job: int | None = None
    reason: str | None = None


class SmtpReply(Protocol):
    """The worker's reply (``postwatch.delivery.send.Reply`` has this shape)."""

    @property
    def delivered(self) -> bool: ...
    @property
    def code(self) -> int | None: ...
    @property
    def text(self) -> str: ...
    @property
    def verdict(self) -> Verdict | None: ...
    @property
    def stage(self) -> str: ...
    @property
    def line(self) -> str: ...


@dataclass(frozen=True)
class Report:
    """One report on a job's mail, from any :class:`Source`."""

    source: Source
    reported: Reported
    verdict: Verdict | None
    evidence: str  # the reply line, the log line, the DSN's summary
    origin: str  # where it came from: "delivery", "log:/var/log/mail.log", "bounce:gym"...
    at: datetime | None = None  # when it happened (default: now)
    code: int | None = None
    status: str | None = None
    stage: str = "downstream"  # a reply's SMTP stage (connect...data, done)
    queue_id: str | None = None
    key: str | None = None  # identifies the report (default: a hash of origin and evidence)
    worker: str | None = None
    recipient: str | None = None  # the recipient the log/DSN names
    final: bool | None = None  # a reply: was the server final ([smtp] final)

    @classmethod
    def from_reply(cls, reply: SmtpReply, *, worker: str, final: bool) -> Report:
        v = reply.verdict
        ok = reply.delivered or v is None
        status = v.status if v else (extract_status(reply.text) if reply.code is not None
                                     else None)
        return cls(
            Source.REPLY,
            Reported.DELIVERED if ok else
            (Reported.BOUNCED if v is not None and v.permanent else Reported.DEFERRED),
            v, reply.line,
            "delivery", code=reply.code, status=status, stage=reply.stage, worker=worker,
            final=final,
        )

    @property
    def downstream(self) -> bool:
        return self.source is not Source.REPLY


def attempt_data(
    job: DeliveryJob, report: Report, result: str, *, attempt: int | None, late: bool = False
) -> dict[str, Any]:
    """The one payload of a ``delivery_attempt`` (and ``delivery_confirmed``) event."""
    v = report.verdict
    return {
        "submission": job.submission_id,
        "job": job.id,
        "recipient": job.recipient,
        "role": job.role,
        "attempt": attempt,
        "result": result,
        "via": report.source.value,
        "outcome": report.reported.value,
        "code": report.code if report.code is not None else (v.code if v else None),
        "status": report.status if report.status is not None else (v.status if v else None),
        "reason": v.reason.value if v else None,
        "permanent": v.permanent if v else None,
        "reply": report.evidence[-500:] if report.downstream else report.evidence,
        "evidence": report.evidence if report.downstream else None,
        "message_id": job.message_id,
        "stage": "downstream" if report.downstream else report.stage,
        "source": report.origin,
        "queue_id": report.queue_id,
        "logged_recipient": report.recipient,
        "key": report.key,
        "worker": report.worker,
        # a relay's 250 ([smtp] final = false) means "queued there", not "in the mailbox"
        "final": report.final,
        "late": late,
    }


# --------------------------------------------------------------------------- the worker's reply


def record(
    db: Database, config: Config, worker: str, claimed: Claimed, reply: SmtpReply
) -> Transition:
    """Write the worker's attempt: its result, events, the hold and the fallback, in one
    transaction, only while ``worker`` still holds the claim (the fence)."""
    now = utcnow()
    report = Report.from_reply(reply, worker=worker, final=config.smtp.final)
    with db.session() as s:
        q = select(DeliveryJob).where(DeliveryJob.id == claimed.job_id)
        if not db.is_sqlite:
            q = q.with_for_update()
        job = s.scalar(q)
        if job is None:  # the submission was purged meanwhile
            return Transition(Result.LOST)
        if job.state != JobState.SENDING or job.claimed_by != worker:
            log.warning(
                "job %s: lease lost before the result was recorded (now %s by %s); reply was %s",
                job.id, job.state, job.claimed_by, reply.line,
            )
            # the job now belongs to another worker; the audit trail still gets this attempt
            result = "delivered" if report.reported is Reported.DELIVERED else "deferred"
            record_event(s, EventKind.DELIVERY_ATTEMPT, account=job.account, mailbox=job.recipient,
                         form=job.form, at=now,
                         data=attempt_data(job, report, result, attempt=None, late=True))
            return Transition(Result.LOST, job.id)
        return apply(s, config, job, report, now=now)


# --------------------------------------------------------------------------- after the 250


def apply_downstream(session: Session, config: Config, report: Report,
                     message_id: str) -> Transition:
    """Find the job of ``message_id`` (one of postwatch's own) and :func:`apply` ``report``."""
    mid = normalise_message_id(message_id)
    sub_id = own_submission(mid, own_domain(config))
    if sub_id is None:
        return Transition(Result.UNKNOWN)
    q = select(DeliveryJob).where(
        DeliveryJob.submission_id == sub_id, DeliveryJob.message_id == mid
    )
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    job = session.scalar(q)
    if job is None:
        return Transition(Result.UNKNOWN)
    hold_before = job.hold_until
    done = apply(session, config, job, report)
    if done.result in _SAID_DOWNSTREAM:
        _say_downstream(config, job, report, done, first_hold=hold_before is None)
    return done


#: what a report learned after the 250 did that the service log says, in words
_SAID_DOWNSTREAM = frozenset({Result.CONFIRMED, Result.HELD, Result.FAILED, Result.DEFERRED})


def _say_downstream(config: Config, job: DeliveryJob, report: Report, done: Transition,
                    *, first_hold: bool) -> None:
    """One service-log line for an outcome learned from the MTA's log or a bounce notice (the
    worker says its own replies): :func:`postwatch.lead_words.lead_outcome_words`."""
    found = config.form(f"{job.account}/{job.form}")
    words = lead_outcome_words(LeadOutcome(
        submission=job.submission_id, recipient=job.recipient, result=done.result.value,
        role=job.role, reason=done.reason, reply=report.evidence,
        relay=f"{config.smtp.host}:{config.smtp.port}", final=config.smtp.final,
        downstream=True, first_hold=first_hold and done.result is Result.HELD,
        fallback=tuple(found[1].fallback) if found else (),
        next_attempt=job.next_attempt_at, hold_until=job.hold_until,
    ))
    level = logging.WARNING if done.result is Result.FAILED else logging.INFO
    log.log(level, "%s (learned from %s)", words, report.origin)


def _at(report: Report, now: datetime) -> datetime:
    at = report.at or now
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _key(report: Report) -> str:
    return report.key or observations.evidence_key(report.origin, report.evidence)


def _downstream_events(session: Session, job: DeliveryJob, since: datetime,
                       until: datetime) -> list[Event]:
    q = select(Event).where(
        Event.kind.in_(("delivery_attempt", "delivery_confirmed")),
        Event.mailbox == job.recipient.lower(),
        Event.at >= since,
        Event.at <= until,
    )
    return [e for e in session.scalars(q.order_by(Event.id)) if e.data.get("job") == job.id]


def _guard(session: Session, job: DeliveryJob, report: Report, at: datetime) -> Transition | None:
    """Why a report after the 250 must change nothing (None: apply it)."""
    key = _key(report)
    near = _downstream_events(session, job, at - SAME_REPORT, at + SAME_REPORT)
    if any(e.data.get("key") == key for e in near):
        return Transition(Result.DUPLICATE, job.id)
    if report.reported is Reported.DELIVERED:
        return None
    # a failure: only for the job's latest hand-over, and only while it waits for an outcome
    handed = queued_as(job.last_reply)
    if job.state == JobState.DELIVERED:
        if report.queue_id and handed and report.queue_id != handed:
            return Transition(Result.IGNORED, job.id, "older hand-over")
        since = _aware(job.delivered_at or job.updated_at)
        # without a queue id (a DSN), its date tells: before the latest hand-over, an older one
        if not report.queue_id and at < since - HANDOVER_SLACK:
            return Transition(Result.IGNORED, job.id, "older hand-over")
        return None
    if job.state == JobState.SENDING:
        # being sent again; an outcome for the previous hand-over (or of unknown origin) waits
        if not report.queue_id or report.queue_id == handed:
            return Transition(Result.IGNORED, job.id, "being sent again")
        return None
    return Transition(Result.IGNORED, job.id, f"job is {job.state}")


# --------------------------------------------------------------------------- the one transition


def apply(
    session: Session, config: Config, job: DeliveryJob, report: Report,
    *, now: datetime | None = None,
) -> Transition:
    """Apply ``report`` to ``job`` in the caller's transaction (see the module's contract).

    A reply must come from the worker holding the claim (:func:`record` checks the fence)."""
    now = now or utcnow()
    at = _at(report, now)
    if report.downstream:
        stop = _guard(session, job, report, at)
        if stop is not None:
            return stop
        report = replace(report, key=_key(report))
    else:
        job.attempts += 1
        job.claimed_by = None
        job.claimed_until = None
        job.updated_at = now
        job.last_reply = report.evidence
    d = config.delivery
    verdict = report.verdict
    watched = config.mailbox_account(job.recipient) is not None

    def attempt_event(result: str) -> None:
        record_event(session, EventKind.DELIVERY_ATTEMPT, account=job.account,
                     mailbox=job.recipient, form=job.form, at=at,
                     data=attempt_data(job, report, result, attempt=job.attempts))

    # ---- success
    if report.reported is Reported.DELIVERED:
        if report.downstream:
            changed = job.state not in (JobState.DELIVERED, JobState.SENDING)
            if job.state != JobState.SENDING:
                _deliver(job, at, now)
            record_event(session, EventKind.DELIVERY_CONFIRMED, account=job.account,
                         mailbox=job.recipient, form=job.form, at=at,
                         data={**attempt_data(job, report, "delivered", attempt=job.attempts),
                               "changed": changed})
            update_submission_status(session, job.submission_id)
            return Transition(Result.CONFIRMED, job.id)
        _deliver(job, now, now)
        attempt_event("delivered")
        if watched:
            observations.handed_over(
                session, account=job.account, mailbox=job.recipient, final=bool(report.final),
                data={"evidence": report.evidence, "source": "delivery",
                      "submission": job.submission_id},
                at=now,
            )
        update_submission_status(session, job.submission_id)
        return Transition(Result.DELIVERED, job.id)

    # ---- failure
    reason = verdict.reason.value if verdict else None
    full = verdict is not None and verdict.reason is Reason.MAILBOX_FULL
    if report.downstream:
        if report.reported is Reported.DEFERRED and not full:
            attempt_event("deferred")  # the MTA retries by itself
            return Transition(Result.DEFERRED, job.id, reason)
        job.claimed_by = None
        job.claimed_until = None
        job.updated_at = now
        job.delivered_at = None
        job.last_reply = report.evidence[-1000:]
        job.last_reason = reason or Reason.OTHER.value
    else:
        job.last_reason = reason
        if full and watched:
            assert verdict is not None
            observations.mailbox_full_seen(
                session, account=job.account, mailbox=job.recipient,
                data={"reason": reason, "status": verdict.status, "evidence": report.evidence,
                      "source": "delivery", "submission": job.submission_id},
                at=now,
            )
    last_reason = job.last_reason or Reason.OTHER.value
    result: Transition
    if report.reported is Reported.EXPIRED:
        attempt_event("failed")
        _expire(session, config, job, now, reason or Reason.EXPIRED.value)
        result = Transition(Result.FAILED, job.id, Reason.EXPIRED.value)
    elif full:
        first = job.hold_until is None
        if first:
            job.hold_until = now + d.full_horizon
        assert job.hold_until is not None
        if now >= _aware(job.hold_until):
            attempt_event("failed")
            _expire(session, config, job, now, Reason.MAILBOX_FULL.value)
            result = Transition(Result.FAILED, job.id, Reason.EXPIRED.value)
        else:
            job.state = JobState.HELD
            job.next_attempt_at = min(now + d.full_retry_every, _aware(job.hold_until))
            attempt_event("held")
            if first:
                record_event(
                    session, EventKind.DELIVERY_HELD, account=job.account, mailbox=job.recipient,
                    form=job.form, at=at,
                    data={"submission": job.submission_id, "job": job.id,
                          "recipient": job.recipient, "reason": Reason.MAILBOX_FULL.value,
                          "until": job.hold_until.isoformat(),
                          "status": verdict.status if verdict else None,
                          "reply": report.evidence[-500:],
                          "stage": "downstream" if report.downstream else report.stage,
                          "source": report.origin},
                )
                _fallback(session, config, job, Reason.MAILBOX_FULL.value, now)
            result = Transition(Result.HELD, job.id, Reason.MAILBOX_FULL.value)
    elif report.downstream or (verdict is not None and verdict.permanent):
        job.state = JobState.FAILED
        attempt_event("failed")
        _fallback(session, config, job, last_reason, now)
        result = Transition(Result.FAILED, job.id, last_reason)
    else:
        # temporary: retry with backoff until the deadline (the hold's end for a held job)
        deadline = _aware(job.hold_until or (job.created_at + d.give_up_after))
        if now >= deadline:
            attempt_event("failed")
            _expire(session, config, job, now, last_reason)
            result = Transition(Result.FAILED, job.id, Reason.EXPIRED.value)
        else:
            if job.hold_until is not None:
                job.state = JobState.HELD
                job.next_attempt_at = min(now + d.full_retry_every, deadline)
            else:
                job.state = JobState.PENDING
                job.next_attempt_at = min(now + backoff(config, job.attempts), deadline)
            attempt_event("deferred")
            result = Transition(Result.DEFERRED, job.id, reason)
    update_submission_status(session, job.submission_id)
    return result


def _deliver(job: DeliveryJob, at: datetime, now: datetime) -> None:
    job.state = JobState.DELIVERED
    job.delivered_at = at
    job.last_reason = None
    job.claimed_by = None
    job.claimed_until = None
    job.updated_at = now


def _expire(s: Session, config: Config, job: DeliveryJob, now: datetime, last_reason: str) -> None:
    job.state = JobState.FAILED
    job.last_reason = Reason.EXPIRED.value
    record_event(
        s, EventKind.DELIVERY_EXPIRED, account=job.account, mailbox=job.recipient, form=job.form,
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
    if job.role != JobRole.PRIMARY:
        return []
    found = config.form(f"{job.account}/{job.form}")
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
    added = enqueue(s, job_rows(job.submission_id, job.account, job.form, targets,
                                sender=config.smtp.sender, now=now, role=JobRole.FALLBACK))
    record_event(
        s, EventKind.DELIVERY_FALLBACK, account=job.account, mailbox=job.recipient, form=job.form,
        data={"submission": job.submission_id, "recipient": job.recipient, "fallback": targets,
              "added": added, "reason": reason},
        at=now,
    )
    return added


def apply_observation(
    session: Session, config: Config, obs: observations.Observation
) -> Transition:
    """Apply a ``downstream`` observation (a log line or a DSN about one of postwatch's own
    mails: data ``message_id``, ``outcome``, ``evidence``, ``source``, optional ``queue_id``,
    ``key``, ``via`` = ``log`` | ``dsn``) to its job."""
    d = obs.data
    report = Report(
        Source(d.get("via") or Source.LOG), Reported(d["outcome"]), obs.verdict,
        str(d["evidence"]), str(d["source"]), at=obs.at, queue_id=d.get("queue_id"),
        key=d.get("key"), recipient=obs.mailbox or None,
    )
    return apply_downstream(session, config, report, str(d["message_id"]))
