"""The alert engine as a background service of ``postwatch serve`` / ``postwatch worker``."""

from __future__ import annotations

import asyncio
import logging

from postwatch.alerts.clock import Clock
from postwatch.alerts.engine import Engine, Sender
from postwatch.config import Config
from postwatch.rooms import Service
from postwatch.services import run_periodic
from postwatch.store import Database

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
        await run_periodic(self.name, self.engine.step, stop, every=self.interval, logger=log)


def build_services(config: Config, db: Database) -> list[Service]:
    return [AlertService(config, db)]
