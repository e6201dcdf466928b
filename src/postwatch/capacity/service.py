"""Background service: poll quotas every ``capacity.poll_every``, scan sites every
``capacity.scan_every``, turn new ``mailbox_full`` delivery events into ``quota_full``, and prune
old readings every ``capacity.prune_every`` (``capacity.retention``)."""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy.orm import Session

from postwatch.capacity.core import Poller, mailbox_full_signal
from postwatch.capacity.retention import Pruner
from postwatch.config import Config
from postwatch.rooms import Service
from postwatch.services import run_periodic
from postwatch.store import Database
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
        self._has_sites = any(a.sites for a in config.accounts)
        self._next_poll = self._next_scan = self._next_prune = 0.0
        #: the store's event follower: a persisted cursor shared by every capacity process, so
        #: a restart or a second process neither misses nor repeats a mailbox_full event
        self.follower = EventFollower(db, "capacity", kinds=("mailbox_full",), start=from_end)

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
