"""Background service: poll quotas every ``capacity.poll_every``, scan sites every
``capacity.scan_every``, turn new ``mailbox_full`` delivery events into ``quota_full``, and prune
old readings every ``capacity.prune_every`` (``capacity.retention``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy.orm import Session

from postwatch.capacity.core import Poller, mailbox_full_signal
from postwatch.capacity.retention import Pruner
from postwatch.config import Config
from postwatch.rooms import Service
from postwatch.store import Database, StoreUnavailable
from postwatch.store.follower import EventFollower, from_end
from postwatch.store.models import Event

log = logging.getLogger("postwatch.capacity")

EVENT_CHECK_EVERY = 10.0
#: the first retention pass waits a little after start-up (the first poll and scan go first)
PRUNE_FIRST_AFTER = 60.0


class CapacityService:
    name = "capacity"

    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db
        self.poller = Poller(config, db)
        self.pruner = Pruner(config, db)
        #: the store's event follower: a persisted cursor shared by every capacity process, so
        #: a restart or a second process neither misses nor repeats a mailbox_full event
        self.follower = EventFollower(db, "capacity", kinds=("mailbox_full",), start=from_end)

    async def run(self, stop: asyncio.Event) -> None:
        cap = self.config.capacity
        next_poll = next_scan = time.monotonic()
        next_prune = next_poll + PRUNE_FIRST_AFTER
        has_sites = any(a.sites for a in self.config.accounts)
        while not stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_poll:
                    next_poll = now + cap.poll_every.total_seconds()
                    await asyncio.to_thread(self.poller.poll)
                if has_sites and now >= next_scan:
                    next_scan = now + cap.scan_every.total_seconds()
                    await asyncio.to_thread(self.poller.scan)
                await asyncio.to_thread(self.follow_events)
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + cap.prune_every.total_seconds()
                    await asyncio.to_thread(self.pruner.run)
            except StoreUnavailable as exc:
                log.error("capacity: store unavailable, will retry: %s", exc)
            wait = min(EVENT_CHECK_EVERY, max(0.0, next_poll - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(wait, 0.05))

    def follow_events(self) -> int:
        """``mailbox_full`` events after the cursor make ``quota_full`` (once per crossing: the
        hysteresis state in ``capacity_state`` and the follower's exactly-once cursor).

        The first start follows from the newest event; episodes already open then are seen by
        the first poll (it checks open episodes). Returns the number of events passed."""
        return self.follower.step(self._on_event)

    def _on_event(self, s: Session, ev: Event) -> None:
        if ev.mailbox:
            mailbox_full_signal(s, self.config, ev.mailbox)


def build_services(config: Config, db: Database) -> list[Service]:
    if not any(a.sites or any(b.quota for b in a.mailboxes) for a in config.accounts):
        return []
    return [CapacityService(config, db)]
