"""Quota sources behind one interface.

A source reads the quota of a batch of mailboxes and returns exactly one ``QuotaReading`` per
mailbox asked for. It never raises for a mailbox it cannot read: that mailbox's reading carries
an ``error`` (and no numbers), which becomes a ``quota_source_failed`` event and a clear line in
``postwatch quota``. Never a crash, never a silent zero.

The three kinds live in ``imap.py``, ``doveadm.py`` and ``maildir.py``; ``read_quotas`` groups the
configured mailboxes by kind and asks each source once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from postwatch.config import Config, QuotaSourceConfig
from postwatch.store.models import utcnow


@dataclass(frozen=True)
class QuotaTarget:
    """One mailbox to read: where its quota comes from, and its configured limit if any."""

    account: str
    mailbox: str
    cfg: QuotaSourceConfig
    #: ``limit_mb`` of the mailbox in the config; used when the source reports no limit
    limit_bytes: int | None = None

    @property
    def user(self) -> str:
        return self.cfg.user or self.mailbox


@dataclass
class QuotaReading:
    account: str
    mailbox: str
    source: str
    used_bytes: int | None = None
    limit_bytes: int | None = None
    messages: int | None = None
    message_limit: int | None = None
    read_at: datetime = field(default_factory=utcnow)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.used_bytes is not None

    @property
    def percent(self) -> float | None:
        if not self.ok or not self.limit_bytes:
            return None
        assert self.used_bytes is not None
        return round(100.0 * self.used_bytes / self.limit_bytes, 2)


class QuotaSource(Protocol):
    kind: str

    def read(self, targets: Sequence[QuotaTarget]) -> list[QuotaReading]:
        """One reading per target, in the same order; errors are readings, not exceptions."""
        ...


def failed(target: QuotaTarget, source: str, error: str) -> QuotaReading:
    return QuotaReading(target.account, target.mailbox, source, error=error)


def finish(target: QuotaTarget, reading: QuotaReading) -> QuotaReading:
    """Apply the configured ``limit_mb`` when the source knows no limit."""
    if reading.ok and not reading.limit_bytes and target.limit_bytes:
        reading.limit_bytes = target.limit_bytes
    return reading


def targets_from_config(config: Config, accounts: Iterable[str] | None = None) -> list[QuotaTarget]:
    """Every mailbox with a ``quota`` source, optionally only those of some accounts."""
    wanted = set(accounts) if accounts is not None else None
    out = []
    for acc, box in config.mailboxes():
        if box.quota is None or (wanted is not None and acc.id not in wanted):
            continue
        limit = int(box.limit_mb * 1024 * 1024) if box.limit_mb else None
        out.append(QuotaTarget(acc.id, box.address, box.quota, limit))
    return out


def make_source(kind: str, *, timeout: timedelta, concurrency: int) -> QuotaSource:
    if kind == "imap":
        from postwatch.capacity.imap import ImapSource

        return ImapSource(timeout=timeout.total_seconds(), concurrency=concurrency)
    if kind == "doveadm":
        from postwatch.capacity.doveadm import DoveadmSource

        return DoveadmSource(timeout=timeout.total_seconds())
    if kind == "maildir":
        from postwatch.capacity.maildir import MaildirSource

        return MaildirSource()
    raise ValueError(f"unknown quota source {kind!r}")


def read_quotas(
    targets: Sequence[QuotaTarget],
    *,
    timeout: timedelta = timedelta(seconds=20),
    concurrency: int = 32,
) -> list[QuotaReading]:
    """Read every target with its source; one reading per target, in the given order."""
    by_kind: dict[str, list[int]] = {}
    for i, t in enumerate(targets):
        by_kind.setdefault(t.cfg.source, []).append(i)
    out: list[QuotaReading | None] = [None] * len(targets)
    for kind, idx in by_kind.items():
        group = [targets[i] for i in idx]
        try:
            source = make_source(kind, timeout=timeout, concurrency=concurrency)
            readings = source.read(group)
        except Exception as exc:  # a bug in a source must not hide the other mailboxes
            readings = [failed(t, kind, f"{type(exc).__name__}: {exc}") for t in group]
        for i, t, r in zip(idx, group, readings, strict=True):
            out[i] = finish(t, r)
    return [r for r in out if r is not None]
