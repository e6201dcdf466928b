"""Retention of capacity readings: full resolution for ``history_full``, then one reading per
``history_step`` (per subject and source) up to ``history_keep``, nothing older.

At 5-minute polls a mailbox gives ~105,000 readings a year; thinned, 14 days at full resolution
plus one an hour up to 400 days is ~13,300. In each ``history_step`` bucket the newest good reading
is kept (a bucket with only failed readings keeps its newest failure, so gaps stay visible).

The candidates are read in read-only transactions and deleted by id in short write transactions
of at most ``CHUNK`` rows: the SQLite write lock that form intake shares is never held for long.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from postwatch.config import Config
from postwatch.store import Database
from postwatch.store.models_capacity import CapacityReading

log = logging.getLogger("postwatch.capacity")

#: rows deleted per write transaction
CHUNK = 500


@dataclass
class PruneResult:
    expired: int = 0  # older than history_keep
    thinned: int = 0  # beyond history_full, more than one per history_step

    @property
    def deleted(self) -> int:
        return self.expired + self.thinned


def full_resolution(config: Config) -> timedelta:
    """How long readings are kept at full resolution (never less than the forecast window)."""
    cap = config.capacity
    return max(cap.history_full, cap.forecast_window)


class Pruner:
    """Keeps, per process, how far back the thinning is already done, so a periodic run reads
    only what became old since the last one (the first run reads the whole thinned range)."""

    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db
        self._thinned_to: datetime | None = None

    def run(self, now: datetime | None = None) -> PruneResult:
        cap = self.config.capacity
        now = now or datetime.now(UTC)
        keep_from = now - max(cap.history_keep, full_resolution(self.config))
        full_from = now - full_resolution(self.config)
        step = cap.history_step
        result = PruneResult()
        with self.db.session(readonly=True) as s:
            subjects = s.execute(
                select(CapacityReading.subject, CapacityReading.name).distinct()
            ).all()
        thin_from = keep_from
        if self._thinned_to is not None:
            # one step back: the bucket that was still partly at full resolution last time
            thin_from = max(keep_from, self._thinned_to - step)
        for subject, name in subjects:
            result.expired += self._expire(subject, name, keep_from)
            if step.total_seconds() > 0 and full_from > thin_from:
                result.thinned += self._thin(subject, name, thin_from, full_from, step)
        self._thinned_to = full_from
        if result.deleted:
            log.info(
                "capacity: pruned %d readings (%d older than %s, %d thinned)",
                result.deleted, result.expired, cap.history_keep, result.thinned,
            )
        return result

    def _expire(self, subject: str, name: str, before: datetime) -> int:
        where = (
            CapacityReading.subject == subject,
            CapacityReading.name == name,
            CapacityReading.at < before,
        )
        with self.db.session(readonly=True) as s:
            ids = list(s.scalars(select(CapacityReading.id).where(*where)))
        return self._delete(ids)

    def _thin(
        self, subject: str, name: str, start: datetime, end: datetime, step: timedelta
    ) -> int:
        with self.db.session(readonly=True) as s:
            rows = s.execute(
                select(
                    CapacityReading.id,
                    CapacityReading.at,
                    CapacityReading.source,
                    CapacityReading.error,
                    CapacityReading.used_bytes,
                )
                .where(
                    CapacityReading.subject == subject,
                    CapacityReading.name == name,
                    CapacityReading.at >= start,
                    CapacityReading.at < end,
                )
                .order_by(CapacityReading.at, CapacityReading.id)
            ).all()
        width = step.total_seconds()
        # per (source, bucket): the reading to keep; good readings beat failed ones, newer
        # beats older
        keep: dict[tuple[str, int], tuple[bool, datetime, int]] = {}
        for rid, at, source, error, used in rows:
            if at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            key = (source, int(at.timestamp() // width))
            rank = (error is None and used is not None, at, rid)
            if key not in keep or rank > keep[key]:
                keep[key] = rank
        kept = {rank[2] for rank in keep.values()}
        return self._delete([r[0] for r in rows if r[0] not in kept])

    def _delete(self, ids: list[int]) -> int:
        for i in range(0, len(ids), CHUNK):
            part = ids[i : i + CHUNK]
            with self.db.session() as s:
                s.execute(delete(CapacityReading).where(CapacityReading.id.in_(part)))
        return len(ids)


def prune_readings(config: Config, db: Database, now: datetime | None = None) -> PruneResult:
    """One full retention pass (the CLI, tests); the service keeps a ``Pruner``."""
    return Pruner(config, db).run(now)
