"""Group commit: many concurrent submissions, one transaction, one fsync.

A single writer thread per process takes every submission waiting in its queue, writes them all
in one transaction and commits (SQLite ``synchronous=FULL`` / PostgreSQL: one fsync), then
resolves every waiter at once. While it waits for the disk, new requests queue up, so the batch
grows with the load: one request alone is written at once, 64 concurrent ones share a commit.

A batch that fails is retried one submission at a time, so one bad row (or one idempotency-key
race with another process) fails only its own request. Nothing is acknowledged before its commit
returned; an error reaches the waiter as an exception (the HTTP edge answers 503).

The thread stops after a while without work and starts again on the next submission, so tests
that build many apps do not leak threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from typing import Any

from postwatch.config import Config
from postwatch.intake import metrics
from postwatch.intake.submissions import NewSubmission, Stored, store_batch, store_submission

log = logging.getLogger("postwatch.intake")

_Item = tuple[NewSubmission, "concurrent.futures.Future[Stored]"]


class GroupCommitter:
    def __init__(
        self, config: Config, db: Any, *, batch_max: int = 256, idle_seconds: float = 10.0
    ) -> None:
        self.config = config
        self.db = db
        self.batch_max = batch_max
        self.idle_seconds = idle_seconds
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.batches = 0  # commits done (for tests and the benchmark)

    # ------------------------------------------------------------------ callers

    def submit_nowait(self, new: NewSubmission) -> concurrent.futures.Future[Stored]:
        fut: concurrent.futures.Future[Stored] = concurrent.futures.Future()
        with self._lock:
            self._queue.put((new, fut))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="postwatch-intake-writer", daemon=True
                )
                self._thread.start()
        return fut

    async def submit(self, new: NewSubmission) -> Stored:
        """Store ``new``; returns after the transaction holding it committed."""
        return await asyncio.wrap_future(self.submit_nowait(new))

    def store(self, new: NewSubmission) -> Stored:
        """Blocking variant (for threads and the CLI)."""
        return self.submit_nowait(new).result()

    # ------------------------------------------------------------------ the writer

    def _take(self) -> list[_Item] | None:
        try:
            first = self._queue.get(timeout=self.idle_seconds)
        except queue.Empty:
            with self._lock:
                if self._queue.empty():
                    self._thread = None
                    return None
            first = self._queue.get()
        batch = [first]
        while len(batch) < self.batch_max:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            self._write(batch)

    def _write(self, batch: list[_Item]) -> None:
        live = [(new, fut) for new, fut in batch if fut.set_running_or_notify_cancel()]
        if not live:
            return
        metrics.BATCH_SIZE.observe(len(live))
        try:
            results = store_batch(self.db, self.config, [new for new, _ in live])
        except Exception as exc:
            # one by one: isolates a bad row, and settles an idempotency-key race with another
            # process (the retry finds the winner's row); a store that is down fails each fast
            log.warning(
                "a batch of %d submissions failed (%s); retrying them one by one",
                len(live),
                exc.__class__.__name__,
            )
            self._one_by_one(live)
            return
        self.batches += 1
        for (_new, fut), stored in zip(live, results, strict=True):
            fut.set_result(stored)

    def _one_by_one(self, live: list[_Item]) -> None:
        for new, fut in live:
            try:
                stored = store_submission(self.db, self.config, new)
            except Exception as exc:
                fut.set_exception(exc)
            else:
                self.batches += 1
                fut.set_result(stored)
