"""Waking this process's delivery workers when jobs were stored.

Whoever stores jobs (the intake's group commit, the fallback, ``retry_now`` from a command in
the same process) calls :func:`wake`; every delivery worker running in this process registers an
``asyncio.Event`` with :func:`register` and waits on it between polls. Guarantees: safe from any
thread, cheap when no worker runs, never raises (a closed loop is forgotten). Only a hint: a
worker that misses it still finds the jobs at its next poll (``[delivery] poll_interval``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing this must not pay for asyncio
    import asyncio

__all__ = ["register", "unregister", "wake"]

_lock = threading.Lock()
_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()


def wake() -> None:
    """Wake every delivery worker running in this process (from any thread)."""
    with _lock:
        waiters = list(_waiters)
    for loop, event in waiters:
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # that loop is closed
            with _lock:
                _waiters.discard((loop, event))


def register(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    """A worker on ``loop`` wants ``event`` set by :func:`wake`."""
    with _lock:
        _waiters.add((loop, event))


def unregister(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    with _lock:
        _waiters.discard((loop, event))
