"""Delivery: the outbox worker that composes, sends, classifies, retries, holds and falls back.

``wake()`` tells the delivery workers of this process that new jobs were stored, so they do not
wait for their next poll. It is safe to call from any thread and cheap when no worker runs.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the CLI imports this package and should not pay for asyncio
    import asyncio

__all__ = ["wake"]

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


def _register(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    with _lock:
        _waiters.add((loop, event))


def _unregister(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    with _lock:
        _waiters.discard((loop, event))
