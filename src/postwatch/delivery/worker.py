"""The delivery worker: claim a due job, compose, send (in a thread), record; repeat.

Each worker handles one job at a time. It polls every ``delivery.poll_interval`` and wakes at
once when ``postwatch.outbox.wake.wake()`` is called in this process. On stop (SIGTERM) it finishes
the send in hand, records its result, gives back any claim it still holds and returns.

Each outcome is one INFO line in the service log, in words
(:func:`postwatch.lead_words.lead_outcome_words`): "handed to 127.0.0.1:25 (queued as 4XyZ), not
yet confirmed" for a relay's 250, "mailbox full, held ..., copy sent to ..." for a hold.
A held job's retry asks the server for no bounce notice where the outcome is learned otherwise
(:func:`postwatch.delivery.send.dsn_request`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from postwatch.config import Config
from postwatch.delivery.compose import compose
from postwatch.delivery.send import Reply, dsn_request, send
from postwatch.lead_words import LeadOutcome, lead_outcome_words
from postwatch.outbox import (
    Claimed,
    Transition,
    claim,
    lease_owner,
    record,
    recover_claims,
    release,
)
from postwatch.outbox.wake import register as _register
from postwatch.outbox.wake import unregister as _unregister
from postwatch.reasons import Reason, Verdict
from postwatch.services import Backoff, run_periodic
from postwatch.store import Database, StoreUnavailable
from postwatch.store.models import DeliveryJob

log = logging.getLogger("postwatch.delivery")


def worker_id(n: int) -> str:
    """The lease owner of worker ``n`` (:func:`postwatch.outbox.lease_owner`)."""
    return lease_owner(n)


@dataclass(frozen=True)
class _Schedule:
    hold_until: datetime | None = None
    next_attempt_at: datetime | None = None


class DeliveryWorker:
    """One delivery worker; ``postwatch serve``/``worker`` run ``delivery.workers`` of them."""

    def __init__(self, config: Config, db: Database, n: int = 1) -> None:
        self.config = config
        self.db = db
        self.n = n
        self.name = f"delivery-{n}"
        self.id = worker_id(n)
        self.sent = 0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        _register(loop, woken)
        with contextlib.suppress(StoreUnavailable):  # a dead predecessor's claims, at once
            n = await asyncio.to_thread(recover_claims, self.db)
            if n:
                log.info("%s: took back %d job(s) claimed by a dead process", self.name, n)
        try:
            await run_periodic(
                self.name, self.step, stop, wake=woken, logger=log,
                every=self.config.delivery.poll_interval.total_seconds(),
            )
        finally:
            _unregister(loop, woken)
            with contextlib.suppress(StoreUnavailable):
                await asyncio.to_thread(release, self.db, self.id)

    def step(self) -> bool:
        """Claim and handle at most one job (blocking); True if there was one."""
        jobs = claim(self.db, self.id, self.config.delivery.lease, limit=1)
        for job in jobs:
            self.handle(job)
        return bool(jobs)

    def handle(self, job: Claimed) -> Transition:
        before = _Schedule(job.hold_until)
        try:
            msg = compose(self.config, job.mail)
        except Exception as exc:  # a job that cannot be composed must not stop the worker
            log.exception("job %s: cannot compose the message", job.job_id)
            reply = Reply(
                False, None, f"cannot compose the message: {exc}"[:500],
                Verdict(Reason.OTHER, permanent=True, status=None, code=None), "compose",
            )
        else:
            notify = dsn_request(self.config, held_retry=before.hold_until is not None)
            reply = send(self.config.smtp, msg, self.config.smtp.sender, job.mail.recipient,
                         notify)
        outcome = self._record(job, reply)
        after = self._schedule(job.job_id) if outcome.result in ("held", "deferred") else before
        level = logging.WARNING if outcome.result in ("failed", "lost") else logging.INFO
        log.log(level, "%s", lead_outcome_words(self._words(job, reply, outcome, before, after)))
        if outcome.result == "delivered":
            self.sent += 1
        return outcome

    def _words(self, job: Claimed, reply: Reply, outcome: Transition, before: _Schedule,
               after: _Schedule) -> LeadOutcome:
        found = self.config.form(f"{job.mail.account}/{job.mail.form}")
        smtp = self.config.smtp
        return LeadOutcome(
            submission=job.mail.submission_id, recipient=job.mail.recipient,
            result=outcome.result, role=job.mail.role,
            reason=outcome.reason or (reply.verdict.reason.value if reply.verdict else None),
            reply=reply.line, relay=f"{smtp.host}:{smtp.port}", final=smtp.final,
            first_hold=outcome.result == "held" and before.hold_until is None,
            fallback=tuple(found[1].fallback) if found else (),
            next_attempt=after.next_attempt_at, hold_until=after.hold_until,
        )

    def _schedule(self, job_id: int) -> _Schedule:
        """The job's hold and next attempt as stored (for the bounce-notice choice and the
        log line); empty if the store cannot say right now (the send goes ahead anyway)."""
        try:
            with self.db.session(readonly=True) as s:
                row = s.get(DeliveryJob, job_id)
                if row is None:
                    return _Schedule()
                return _Schedule(row.hold_until, row.next_attempt_at)
        except StoreUnavailable:
            return _Schedule()

    def _record(self, job: Claimed, reply: Reply) -> Transition:
        """Record the result; if the store is briefly down, keep trying for half the lease so a
        mail that went out is not sent again (after the lease, another worker would resend it
        with the same Message-ID)."""
        give_up = time.monotonic() + self.config.delivery.lease.total_seconds() / 2
        backoff = Backoff()
        while True:
            try:
                return record(self.db, self.config, self.id, job, reply)
            except StoreUnavailable as exc:
                delay = backoff.next()
                if time.monotonic() + delay > give_up:
                    raise
                log.warning("job %s: cannot record the result yet (%s); retrying", job.job_id, exc)
                time.sleep(delay)

