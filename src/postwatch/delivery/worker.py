"""The delivery worker: claim a due job, compose, send (in a thread), record; repeat.

Each worker handles one job at a time. It polls every ``delivery.poll_interval`` and wakes at
once when ``postwatch.outbox.wake.wake()`` is called in this process. On stop (SIGTERM) it finishes
the send in hand, records its result, gives back any claim it still holds and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from postwatch.config import Config
from postwatch.delivery.compose import compose
from postwatch.delivery.send import Reply, send
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

log = logging.getLogger("postwatch.delivery")


def worker_id(n: int) -> str:
    """The lease owner of worker ``n`` (:func:`postwatch.outbox.lease_owner`)."""
    return lease_owner(n)


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
        try:
            msg = compose(self.config, job.mail)
        except Exception as exc:  # a job that cannot be composed must not stop the worker
            log.exception("job %s: cannot compose the message", job.job_id)
            reply = Reply(
                False, None, f"cannot compose the message: {exc}"[:500],
                Verdict(Reason.OTHER, permanent=True, status=None, code=None), "compose",
            )
        else:
            reply = send(self.config.smtp, msg, self.config.smtp.sender, job.mail.recipient)
        outcome = self._record(job, reply)
        log.info(
            "job %s %s -> %s (%s): %s", job.job_id, job.mail.recipient, outcome.result,
            outcome.reason or "ok", reply.line,
        )
        if outcome.result == "delivered":
            self.sent += 1
        return outcome


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

