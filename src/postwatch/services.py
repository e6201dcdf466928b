"""The one loop of periodic background work, and its back-off.

Every room's background work that repeats (the delivery workers, the alert engine, the
capacity watch, the retention purge) runs through :func:`run_periodic`:

- ``step()`` runs in a worker thread (blocking database and network I/O stays off the event
  loop); a truthy result means "more work may be waiting": the next step runs at once;
- :class:`~postwatch.store.StoreUnavailable` out of a step is logged (one line, no traceback)
  and the step is tried again after a back-off (:class:`Backoff`: 0.5 s doubling to 10 s,
  reset by the first step that succeeds); nothing is acknowledged by a step that failed;
- otherwise the loop waits ``every`` seconds (a number, or a function asked after each step),
  or less when ``wake`` is set;
- it returns as soon as ``stop`` is set, after the step in hand has finished.

Any other exception leaves the loop: the composition root (``postwatch.app``) logs it with
its traceback and starts the service again after a pause. Loops that hold data until it is
stored (the mail-log follower, the syslog writer, the bounce reader) use :class:`Backoff` and
:func:`wait_stop` for their retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from postwatch.store import StoreUnavailable

log = logging.getLogger("postwatch")

#: the back-off after a failed step: first delay, and the longest
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0


class Backoff:
    """Delays after consecutive failures: ``first``, doubling, at most ``cap``; ``reset()``
    after a success."""

    def __init__(self, first: float = BACKOFF_FIRST, cap: float = BACKOFF_MAX) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        """The delay to wait now (and double the one after it)."""
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first

    async def wait(self, stop: asyncio.Event) -> bool:
        """Wait the next delay, or until ``stop``; True if stopped."""
        return await wait_stop(stop, self.next())


async def wait_stop(stop: asyncio.Event, timeout: float, wake: asyncio.Event | None = None) -> bool:
    """Wait until ``stop`` (or ``wake``) is set, or ``timeout`` seconds; True if stopped."""
    if wake is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(timeout, 0.0))
        return stop.is_set()
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    return stop.is_set()


async def run_periodic(
    name: str,
    step: Callable[[], object],
    stop: asyncio.Event,
    *,
    every: float | Callable[[], float],
    wake: asyncio.Event | None = None,
    backoff: Backoff | None = None,
    logger: logging.Logger = log,
) -> None:
    """Run ``step`` until ``stop`` is set (the module docstring says how)."""
    backoff = backoff or Backoff()
    while not stop.is_set():
        if wake is not None:
            wake.clear()
        try:
            more = await asyncio.to_thread(step)
        except StoreUnavailable as exc:
            delay = backoff.next()
            logger.warning("%s: store unavailable (%s); retrying in %.1fs", name, exc, delay)
            await wait_stop(stop, delay)
            continue
        backoff.reset()
        if more or stop.is_set():
            continue
        await wait_stop(stop, every() if callable(every) else every, wake)


class PeriodicService:
    """A :class:`postwatch.rooms.Service` whose work is :meth:`step`, repeated by
    :func:`run_periodic` every :attr:`every` seconds."""

    name: str = "periodic"
    every: float = 1.0

    def step(self) -> object:
        """One round of work (blocking, run in a thread); truthy when more may be waiting."""
        raise NotImplementedError

    async def run(self, stop: asyncio.Event) -> None:
        await run_periodic(self.name, self.step, stop, every=self.every)
