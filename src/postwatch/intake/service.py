"""Background work of the intake: the periodic retention purge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from postwatch.config import Config
from postwatch.intake.records import purge_expired

log = logging.getLogger("postwatch.intake")


class RetentionPurge:
    """Deletes submissions past their form's ``retention_days``, at start and every
    ``intake.purge_every``. Several processes may run it at once: deleting is idempotent."""

    name = "intake-retention"

    def __init__(self, config: Config, db: Any) -> None:
        self.config = config
        self.db = db

    async def run(self, stop: asyncio.Event) -> None:
        every = self.config.intake.purge_every.total_seconds()
        while not stop.is_set():
            try:
                purged = await asyncio.to_thread(purge_expired, self.db, self.config)
            except Exception as exc:  # the store may be down for a while: try again later
                log.warning("retention purge failed, will retry: %s", exc)
            else:
                for p in purged:
                    log.info(
                        "retention: purged %d submissions of %s/%s",
                        p.submissions,
                        p.account,
                        p.form,
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)


def build_services(config: Config, db: Any) -> list[Any]:
    return [RetentionPurge(config, db)]
