"""Background service: poll quotas every ``capacity.poll_every``, scan sites every
``capacity.scan_every``, turn new ``mailbox_full`` delivery events into ``quota_full``, and prune
old readings every ``capacity.prune_every`` (``capacity.retention``)."""

from __future__ import annotations

import asyncio
import logging
import time

from postwatch.capacity.core import Poller, mailbox_full_signal
from postwatch.capacity.retention import Pruner
from postwatch.config import Config
from postwatch.rooms import Service
from postwatch.services import run_periodic
from postwatch.store import Database
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
        self._has_sites = any(a.sites for a in config.accounts)
        self._next_poll = self._next_scan = self._next_prune = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        self._next_poll = self._next_scan = time.monotonic()
        self._next_prune = self._next_poll + PRUNE_FIRST_AFTER
        await run_periodic(self.name, self._round, stop, every=self._wait, logger=log)

    def _round(self) -> None:
        """What is due: poll, scan, follow new events, prune (in a thread)."""
        cap = self.config.capacity
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + cap.poll_every.total_seconds()
            self.poller.poll()
        if self._has_sites and now >= self._next_scan:
            self._next_scan = now + cap.scan_every.total_seconds()
            self.poller.scan()
        self.follow_events()
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + cap.prune_every.total_seconds()
            self.pruner.run()

    def _wait(self) -> float:
        return max(0.05, min(EVENT_CHECK_EVERY, self._next_poll - time.monotonic()))

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
