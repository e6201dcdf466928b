"""Background work of the intake: the periodic retention purge."""

from __future__ import annotations

import logging
from typing import Any

from postwatch.config import Config
from postwatch.intake.records import purge_expired
from postwatch.services import PeriodicService

log = logging.getLogger("postwatch.intake")


class RetentionPurge(PeriodicService):
    """Deletes submissions past their form's ``retention_days``, at start and every
    ``intake.purge_every``. Several processes may run it at once: deleting is idempotent."""

    name = "intake-retention"

    def __init__(self, config: Config, db: Any) -> None:
        self.config = config
        self.db = db
        self.every = config.intake.purge_every.total_seconds()

    def step(self) -> None:
        for p in purge_expired(self.db, self.config):
            log.info(
                "retention: purged %d submissions of %s/%s", p.submissions, p.account, p.form
            )


def build_services(config: Config, db: Any) -> list[Any]:
    return [RetentionPurge(config, db)]
