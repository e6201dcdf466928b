"""Delivery: the outbox worker that composes, sends, classifies, retries, holds and falls back.

``wake()`` (from the outbox kernel, :mod:`postwatch.outbox.wake`) tells the delivery workers of
this process that new jobs were stored, so they do not wait for their next poll.
"""

from __future__ import annotations

from postwatch.outbox.wake import wake

__all__ = ["wake"]
