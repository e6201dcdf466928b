"""The alert engine as a background service of ``postwatch serve`` / ``postwatch worker``."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from postwatch.alerts.clock import Clock
from postwatch.alerts.engine import Engine, Sender
from postwatch.config import Config
from postwatch.rooms import Service
from postwatch.store import Database, StoreUnavailable

log = logging.getLogger("postwatch.alerts")


class AlertService:
    name = "alerts"

    def __init__(
        self,
        config: Config,
        db: Database,
        *,
        clock: Clock | None = None,
        sender: Sender | None = None,
    ) -> None:
        self.engine = Engine(config, db, clock=clock, sender=sender)
        self.interval = config.alerts.poll_interval.total_seconds()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                work = await asyncio.to_thread(self.engine.step)
            except StoreUnavailable as exc:
                log.warning("alerts: store unavailable, retrying: %s", exc)
                work = 0
            if work and not stop.is_set():
                continue  # more may be waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)


def build_services(config: Config, db: Database) -> list[Service]:
    return [AlertService(config, db)]
