"""Group commit: many concurrent submissions, one transaction, one fsync.

A single writer thread per process takes every submission waiting in its queue, writes them all
in one transaction and commits (SQLite ``synchronous=FULL`` / PostgreSQL: one fsync), then
resolves every waiter at once (one wake-up of the event loop per batch, not per request). While
it waits for the disk, new requests queue up, so the batch grows with the load: one request alone
is written at once, 64 concurrent ones share a commit.

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
from collections import defaultdict
from typing import Any

from postwatch.config import Config
from postwatch.intake import metrics
from postwatch.intake.quietlog import QuietLog
from postwatch.intake.submissions import (
    NewSubmission,
    Stored,
    prepare,
    store_batch,
    store_submission,
)
from postwatch.outbox.wake import wake as wake_delivery

log = logging.getLogger("postwatch.intake")

#: a waiter: an asyncio future (with its loop) or a concurrent future (threads, the CLI)
_Waiter = tuple["asyncio.AbstractEventLoop | None", Any]
_Item = tuple[NewSubmission, _Waiter]


def _settle(outcomes: list[tuple[Any, Stored | BaseException]]) -> None:
    """Runs in the waiters' event loop: resolve every future of a batch in one go."""
    for fut, outcome in outcomes:
        if fut.done():
            continue  # the request was cancelled (client gone); the row is stored regardless
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)


class GroupCommitter:
    """``writers`` threads (1 for SQLite, which has one writer anyway; several for PostgreSQL,
    whose own group commit then overlaps their transactions) share one queue."""

    def __init__(
        self,
        config: Config,
        db: Any,
        *,
        batch_max: int = 256,
        writers: int = 1,
        idle_seconds: float = 10.0,
    ) -> None:
        self.config = config
        self.db = db
        self.batch_max = batch_max
        self.writers = max(1, writers)
        self.idle_seconds = idle_seconds
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live = 0  # writer threads running
        self.batches = 0  # commits done (for tests and the benchmark)
        # during a store outage every batch fails: one line per 10 s, not one per batch
        self.batch_failures = QuietLog(
            log, logging.WARNING, "submission batches failed, retrying one by one",
            report_end=False,
        )

    # ------------------------------------------------------------------ callers

    def _start_writer(self) -> None:
        """With the lock held."""
        self._live += 1
        threading.Thread(target=self._run, name="postwatch-intake-writer", daemon=True).start()

    def _put(self, item: _Item) -> None:
        with self._lock:
            self._queue.put(item)
            # one writer for a trickle; more (up to ``writers``) when work queues up
            if self._live == 0 or (self._live < self.writers and self._queue.qsize() > 1):
                self._start_writer()

    def _prepare(self, new: NewSubmission) -> None:
        """Bind the rows in the caller's thread, while the writer is busy with the batch before:
        the writer's turn (SQLite: with the write lock held) is then only SQL and the fsync."""
        engine = getattr(self.db, "engine", None)
        if engine is not None and new.prepared is None:
            new.prepared = prepare(new, self.config, engine.dialect)

    async def submit(self, new: NewSubmission) -> Stored:
        """Store ``new``; returns after the transaction holding it committed."""
        self._prepare(new)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Stored] = loop.create_future()
        self._put((new, (loop, fut)))
        return await fut

    def store(self, new: NewSubmission) -> Stored:
        """Blocking variant (threads, the CLI)."""
        self._prepare(new)
        fut: concurrent.futures.Future[Stored] = concurrent.futures.Future()
        self._put((new, (None, fut)))
        return fut.result()

    # ------------------------------------------------------------------ the writer

    def _take(self) -> list[_Item] | None:
        """The next batch, or None when there was no work for ``idle_seconds`` (the thread
        then ends; its count is already taken off ``_live``)."""
        try:
            first = self._queue.get(timeout=self.idle_seconds)
        except queue.Empty:
            with self._lock:
                if self._queue.empty():
                    self._live -= 1
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
        counted = True
        try:
            while True:
                batch = self._take()
                if batch is None:
                    counted = False
                    return
                try:
                    self._write(batch)
                except Exception as exc:  # a bug, not the store: fail the batch, keep serving
                    log.exception("intake writer: unexpected error")
                    self._resolve(batch, [exc] * len(batch))
        finally:
            with self._lock:
                if counted:
                    self._live -= 1
                if self._live == 0 and not self._queue.empty():  # work came as we left
                    self._start_writer()

    def _write(self, batch: list[_Item]) -> None:
        metrics.BATCH_SIZE.observe(len(batch))
        outcomes: list[Stored | BaseException]
        try:
            outcomes = list(store_batch(self.db, self.config, [new for new, _ in batch]))
            self.batches += 1
            self.batch_failures.ended()
        except Exception as exc:
            # one by one: isolates a bad row, and settles an idempotency-key race with another
            # process (the retry finds the winner's row); a store that is down fails each fast
            self.batch_failures.event(f"{len(batch)} submissions, {exc.__class__.__name__}")
            outcomes = [self._one(new) for new, _ in batch]
        self._resolve(batch, outcomes)
        if any(isinstance(o, Stored) and o.created for o in outcomes):
            wake_delivery()  # new outbox rows: this process's workers need not wait for a poll

    def _one(self, new: NewSubmission) -> Stored | BaseException:
        try:
            stored = store_submission(self.db, self.config, new)
        except Exception as exc:
            return exc
        self.batches += 1
        return stored

    @staticmethod
    def _resolve(batch: list[_Item], outcomes: list[Stored | BaseException]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Stored | BaseException]]]
        by_loop = defaultdict(list)
        for (_new, (loop, fut)), outcome in zip(batch, outcomes, strict=True):
            if loop is None:
                if isinstance(outcome, BaseException):
                    fut.set_exception(outcome)
                else:
                    fut.set_result(outcome)
            else:
                by_loop[loop].append((fut, outcome))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:
                pass  # that loop is closed: nobody is waiting any more
