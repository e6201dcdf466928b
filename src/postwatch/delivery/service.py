"""Background services of the delivery room for ``postwatch serve`` and ``postwatch worker``."""

from __future__ import annotations

from postwatch.config import Config
from postwatch.delivery.worker import DeliveryWorker
from postwatch.rooms import Service
from postwatch.store import Database


def build_services(config: Config, db: Database) -> list[Service]:
    """``delivery.workers`` independent workers; several processes may run them on one store."""
    return [DeliveryWorker(config, db, n) for n in range(1, config.delivery.workers + 1)]
