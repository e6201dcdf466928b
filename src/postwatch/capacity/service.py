"""Background service: poll quotas every ``capacity.poll_every``, scan sites every
``capacity.scan_every``, turn new ``mailbox_full`` delivery events into ``quota_full``, and prune
old readings every ``capacity.prune_every`` (``capacity.retention``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from postwatch.capacity.core import Poller, mailbox_full_signal
from postwatch.capacity.retention import Pruner
from postwatch.config import Config
from postwatch.rooms import Service
from postwatch.store import Database, StoreUnavailable
from postwatch.store.events import fetch_events, last_event_id

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
        self.cursor: int | None = None

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

    def follow_events(self) -> None:
        """``mailbox_full`` events newer than the cursor make ``quota_full`` (once per crossing).

        Episodes already open at start-up are seen by the first poll (it checks open episodes).
        """
        with self.db.session() as s:
            if self.cursor is None:
                self.cursor = last_event_id(s)
                return
            new = fetch_events(s, kinds=["mailbox_full"], after_id=self.cursor, limit=500)
            for ev in new:
                if ev.mailbox:
                    mailbox_full_signal(s, self.config, ev.mailbox)
                self.cursor = ev.id


def build_services(config: Config, db: Database) -> list[Service]:
    if not any(a.sites or any(b.quota for b in a.mailboxes) for a in config.accounts):
        return []
    return [CapacityService(config, db)]
