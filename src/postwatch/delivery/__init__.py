"""Delivery: the outbox worker that composes, sends, classifies, retries, holds and falls back.

Whoever stores jobs wakes this process's workers with :func:`postwatch.outbox.wake.wake`. This
package's ``__init__`` stays empty: the CLI imports it to find the room's commands and must not
pay for SQLAlchemy there.
"""
