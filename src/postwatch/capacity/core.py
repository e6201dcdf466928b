"""The capacity watch's work: poll quota sources, scan sites, store readings, fire conditions.

Used by the background service, the CLI (``postwatch quota --poll``, ``postwatch space``) and the
Dovecot hook; everything that writes goes through one transaction per batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from postwatch.capacity import conditions
from postwatch.capacity.forecast import NO_FORECAST, Forecast, forecast
from postwatch.capacity.sources import QuotaReading, QuotaTarget, read_quotas, targets_from_config
from postwatch.capacity.space import SpaceReport, scan
from postwatch.config import AccountConfig, Config, MailboxConfig, resolve_path
from postwatch.observations import open_episodes
from postwatch.store import Database
from postwatch.store.models import Event, utcnow
from postwatch.store.models_capacity import CapacityReading

log = logging.getLogger("postwatch.capacity")

MB = 1024 * 1024


# ------------------------------------------------------------------------------------ history
def history(
    session: Session, subject: str, name: str, since: datetime
) -> list[tuple[datetime, int]]:
    rows = session.execute(
        select(CapacityReading.at, CapacityReading.used_bytes)
        .where(
            CapacityReading.subject == subject,
            CapacityReading.name == name,
            CapacityReading.at >= since,
            CapacityReading.used_bytes.is_not(None),
            CapacityReading.error.is_(None),
        )
        .order_by(CapacityReading.at)
    ).all()
    return [(at, int(used or 0)) for at, used in rows]


def latest(
    session: Session, subject: str, name: str, *, ok: bool = False
) -> CapacityReading | None:
    q = select(CapacityReading).where(
        CapacityReading.subject == subject, CapacityReading.name == name
    )
    if ok:
        q = q.where(CapacityReading.error.is_(None), CapacityReading.used_bytes.is_not(None))
    return session.scalar(q.order_by(CapacityReading.at.desc(), CapacityReading.id.desc()).limit(1))


class ForecastCache:
    """Recompute a subject's forecast at most every ``every`` (the fit reads the window)."""

    def __init__(self, every: timedelta = timedelta(hours=1)) -> None:
        self.every = every
        self._cache: dict[tuple[str, str], tuple[datetime, int | None, Forecast]] = {}

    def get(
        self,
        session: Session,
        subject: str,
        name: str,
        limit: int | None,
        window: timedelta,
        now: datetime,
        extra: tuple[datetime, int] | None = None,
    ) -> Forecast:
        key = (subject, name)
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.every and hit[1] == limit:
            return hit[2]
        hist = history(session, subject, name, now - window)
        if extra is not None and (not hist or hist[-1][0] < extra[0]):
            hist.append(extra)
        fc = forecast(hist, limit) if hist else NO_FORECAST
        self._cache[key] = (now, limit, fc)
        return fc


def _forecast_for(
    session: Session,
    config: Config,
    subject: str,
    name: str,
    limit: int | None,
    now: datetime,
    cache: ForecastCache | None,
) -> Forecast:
    window = config.capacity.forecast_window
    if cache is not None:
        return cache.get(session, subject, name, limit, window, now)
    hist = history(session, subject, name, now - window)
    return forecast(hist, limit) if hist else NO_FORECAST


# ------------------------------------------------------------------------------------ mailboxes
WRITE_BATCH = 200


def open_full_episodes(session: Session, mailboxes: Sequence[str]) -> set[str]:
    """The mailboxes among ``mailboxes`` with an open ``mailbox_full`` episode (the rule of
    :mod:`postwatch.observations`)."""
    return open_episodes(session, mailboxes)


@dataclass
class Prepared:
    """What evaluating readings needs to read, gathered before the write transaction."""

    forecasts: dict[str, Forecast]
    full: set[str]


def prepare(
    session: Session,
    config: Config,
    readings: Sequence[QuotaReading],
    cache: ForecastCache | None = None,
) -> Prepared:
    forecasts: dict[str, Forecast] = {}
    window = config.capacity.forecast_window
    for r in readings:
        if not r.ok:
            continue
        assert r.used_bytes is not None
        point = (r.read_at, r.used_bytes)
        if cache is not None:
            forecasts[r.mailbox] = cache.get(
                session, "mailbox", r.mailbox, r.limit_bytes, window, r.read_at, extra=point
            )
        else:
            hist = history(session, "mailbox", r.mailbox, r.read_at - window)
            forecasts[r.mailbox] = forecast([*hist, point], r.limit_bytes)
    return Prepared(forecasts, open_full_episodes(session, [r.mailbox for r in readings]))


def record_quota_readings(
    session: Session,
    config: Config,
    readings: Sequence[QuotaReading],
    *,
    cache: ForecastCache | None = None,
    prepared: Prepared | None = None,
) -> list[Event]:
    """Store readings, then evaluate each mailbox's conditions (in the caller's transaction)."""
    cap = config.capacity
    if prepared is None:
        prepared = prepare(session, config, readings, cache)
    session.add_all(
        CapacityReading(
            at=r.read_at,
            account=r.account,
            subject="mailbox",
            name=r.mailbox,
            source=r.source,
            used_bytes=r.used_bytes if r.ok else None,
            limit_bytes=r.limit_bytes if r.ok else None,
            messages=r.messages if r.ok else None,
            error=r.error,
        )
        for r in readings
    )
    rows = conditions.state_rows(session, "mailbox", {r.mailbox: r.account for r in readings})
    events: list[Event] = []
    for r in readings:
        row = rows[r.mailbox]
        ev = conditions.source_result(
            session,
            subject="mailbox",
            name=r.mailbox,
            account=r.account,
            source=r.source,
            error=r.error,
            now=r.read_at,
            row=row,
        )
        if ev is not None:
            log.info("quota source %s failed for %s: %s", r.source, r.mailbox, r.error)
            events.append(ev)
        if not r.ok:
            continue
        events += conditions.apply(
            session,
            subject="mailbox",
            name=r.mailbox,
            account=r.account,
            percent=r.percent,
            used_bytes=r.used_bytes,
            limit_bytes=r.limit_bytes,
            levels=cap.levels,
            ok_margin=cap.ok_margin,
            full_signal=r.mailbox in prepared.full,
            forecast=prepared.forecasts.get(r.mailbox),
            horizon=cap.forecast_horizon,
            via=r.source,
            now=r.read_at,
            row=row,
        )
    return events


def store_quota_readings(
    config: Config,
    db: Database,
    readings: Sequence[QuotaReading],
    *,
    cache: ForecastCache | None = None,
) -> None:
    """Store and evaluate readings: the reading (history, episodes) in a read-only transaction,
    then the writes in short transactions of ``WRITE_BATCH`` mailboxes, so a poll of thousands
    of mailboxes never holds SQLite's write lock for long (form intake shares it)."""
    for i in range(0, len(readings), WRITE_BATCH):
        chunk = readings[i : i + WRITE_BATCH]
        with db.session(readonly=True) as s:
            prepared = prepare(s, config, chunk, cache)
        with db.session() as s:
            record_quota_readings(s, config, chunk, cache=cache, prepared=prepared)


def poll_mailboxes(
    config: Config,
    db: Database,
    *,
    accounts: Iterable[str] | None = None,
    cache: ForecastCache | None = None,
) -> list[QuotaReading]:
    """Read every configured quota source now; store and evaluate the readings."""
    targets = targets_from_config(config, accounts)
    if not targets:
        return []
    readings = read_quotas(
        targets,
        timeout=config.capacity.source_timeout,
        concurrency=config.capacity.imap_concurrency,
    )
    store_quota_readings(config, db, readings, cache=cache)
    return readings


def find_mailbox(config: Config, user: str) -> tuple[AccountConfig, MailboxConfig] | None:
    """The configured mailbox for a Dovecot user name (its address, or its quota ``user``)."""
    user = user.strip().lower()
    for acc, box in config.mailboxes():
        if box.address == user or (box.quota and (box.quota.user or "").lower() == user):
            return acc, box
    return None


def mailbox_full_signal(session: Session, config: Config, mailbox: str) -> list[Event]:
    """A ``mailbox_full`` delivery event arrived for ``mailbox``: quota_full if not said yet."""
    found = find_mailbox(config, mailbox)
    if found is None:
        return []
    acc, box = found
    state = conditions.current_state(session, "mailbox", box.address)
    last = latest(session, "mailbox", box.address, ok=True)
    return conditions.apply(
        session,
        subject="mailbox",
        name=box.address,
        account=acc.id,
        percent=state.percent if state else None,
        used_bytes=last.used_bytes if last else None,
        limit_bytes=last.limit_bytes if last else None,
        levels=config.capacity.levels,
        ok_margin=config.capacity.ok_margin,
        full_signal=True,
        via="mailbox_full",
        read_at=last.at if last is not None else None,
    )


def hook_warning(session: Session, config: Config, user: str, percent: float) -> list[Event]:
    """Dovecot's quota_warning script said ``user`` crossed ``percent``: same rule as polls."""
    found = find_mailbox(config, user)
    account = found[0].id if found else None
    name = found[1].address if found else user.strip().lower()
    last = latest(session, "mailbox", name, ok=True)
    return conditions.apply(
        session,
        subject="mailbox",
        name=name,
        account=account,
        percent=float(percent),
        used_bytes=last.used_bytes if last else None,
        limit_bytes=last.limit_bytes if last else None,
        levels=config.capacity.levels,
        ok_margin=config.capacity.ok_margin,
        full_signal=False,
        via="dovecot_hook",
    )


def quota_rows(
    config: Config,
    session: Session,
    targets: Sequence[QuotaTarget],
    *,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The rows of ``postwatch quota``: the latest reading and forecast of every mailbox."""
    now = now or utcnow()
    rows = []
    for t in targets:
        last = latest(session, "mailbox", t.mailbox)
        row: dict[str, Any] = {
            "account": t.account,
            "mailbox": t.mailbox,
            "source": t.cfg.source,
            "used_bytes": None,
            "limit_bytes": None,
            "percent": None,
            "messages": None,
            "growth_bytes_per_day": None,
            "full_at": None,
            "full_at_range": [None, None],
            "forecast": None,
            "read_at": None,
            "error": None,
        }
        if last is None:
            row["error"] = "no reading yet (run `postwatch quota --poll`, or `postwatch serve`)"
            rows.append(row)
            continue
        row["read_at"] = last.at.isoformat()
        row["source"] = last.source
        if last.error is not None:
            row["error"] = last.error
            good = latest(session, "mailbox", t.mailbox, ok=True)
            if good is not None:
                row["last_good"] = {"used_bytes": good.used_bytes, "read_at": good.at.isoformat()}
            rows.append(row)
            continue
        row["used_bytes"] = last.used_bytes
        row["limit_bytes"] = last.limit_bytes
        row["messages"] = last.messages
        if last.limit_bytes and last.used_bytes is not None:
            row["percent"] = round(100.0 * last.used_bytes / last.limit_bytes, 2)
        fc = _forecast_for(session, config, "mailbox", t.mailbox, last.limit_bytes, now, None)
        row.update(fc.as_dict())
        stale_after = config.capacity.poll_every * 3
        if now - last.at > stale_after:
            row["stale"] = True
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------ sites
def _mail_paths(acc: AccountConfig) -> list[Path]:
    return [Path(b.quota.path) for b in acc.mailboxes if b.quota and b.quota.path]


def _under(path: Path, root: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
    except ValueError:
        return False
    return True


def site_reports(
    config: Config,
    session: Session | None,
    acc: AccountConfig,
    *,
    largest: int | None = None,
) -> list[dict[str, Any]]:
    """Scan every site of an account and add the package arithmetic (mail shares the limit).

    Mail stored outside the site root (latest readings of the account's mailboxes) counts
    against the first site that has a ``limit_mb``: the package.
    """
    out = []
    mail_outside = 0
    mail_outside_known = True
    if session is not None:
        for box in acc.mailboxes:
            root_paths = [resolve_path(config, s.root) for s in acc.sites]
            p = Path(box.quota.path) if box.quota and box.quota.path else None
            if p is not None and any(_under(p, r) for r in root_paths):
                continue  # counted by the scan, as mail
            last = latest(session, "mailbox", box.address, ok=True)
            if last is not None and last.used_bytes is not None:
                mail_outside += last.used_bytes
            elif box.quota is not None:
                mail_outside_known = False
    package_taken = False
    for site in acc.sites:
        root = resolve_path(config, site.root)
        limit = int(site.limit_mb * MB) if site.limit_mb else None
        rep: SpaceReport = scan(
            root,
            largest=largest or config.capacity.largest,
            mail_dirs=_mail_paths(acc),
            limit_bytes=limit,
        )
        d = rep.as_dict()
        d["name"] = site.name or site.root.name
        if limit is not None and not package_taken:
            package_taken = True
            d["mail_outside_bytes"] = mail_outside
            d["mail_outside_complete"] = mail_outside_known
            used = rep.total_bytes + mail_outside
            d["package_used_bytes"] = used
            d["package_percent"] = round(100.0 * used / limit, 2)
            d["free_bytes"] = limit - used
            site_non_mail = rep.total_bytes - rep.categories.get("mail", 0)
            d["mail_room_bytes"] = max(0, limit - site_non_mail)
        else:
            d["mail_outside_bytes"] = 0
            d["package_used_bytes"] = rep.total_bytes
            d["package_percent"] = d["percent"]
            d["free_bytes"] = (limit - rep.total_bytes) if limit is not None else None
            d["mail_room_bytes"] = None
        out.append(d)
    return out


def record_site_reports(
    session: Session,
    config: Config,
    acc: AccountConfig,
    reports: Sequence[dict[str, Any]],
    *,
    cache: ForecastCache | None = None,
) -> list[Event]:
    cap = config.capacity
    events: list[Event] = []
    now = utcnow()
    for d in reports:
        error = None
        if d["error_count"] and d["files"] == 0 and d["dirs"] == 0:
            error = d["errors"][0] if d["errors"] else "cannot scan"
        used = d["package_used_bytes"] if error is None else None
        limit = d["limit_bytes"]
        details = {
            k: d[k]
            for k in (
                "categories",
                "largest",
                "largest_dirs",
                "files",
                "dirs",
                "total_bytes",
                "mail_outside_bytes",
                "error_count",
            )
            if k in d
        }
        details["largest"] = details.get("largest", [])[:10]
        details["largest_dirs"] = details.get("largest_dirs", [])[:10]
        session.add(
            CapacityReading(
                at=now,
                account=acc.id,
                subject="site",
                name=d["root"],
                source="scan",
                used_bytes=used,
                limit_bytes=limit,
                error=error,
                details=details,
            )
        )
        session.flush()
        ev = conditions.source_result(
            session,
            subject="site",
            name=d["root"],
            account=acc.id,
            source="scan",
            error=error,
            now=now,
        )
        if ev is not None:
            events.append(ev)
        if error is not None:
            continue
        fc = _forecast_for(session, config, "site", d["root"], limit, now, cache)
        percent = round(100.0 * used / limit, 2) if limit and used is not None else None
        events += conditions.apply(
            session,
            subject="site",
            name=d["root"],
            account=acc.id,
            percent=percent,
            used_bytes=used,
            limit_bytes=limit,
            levels=cap.levels,
            ok_margin=cap.ok_margin,
            forecast=fc,
            horizon=cap.forecast_horizon,
            via="scan",
            now=now,
        )
    return events


def scan_sites(
    config: Config,
    db: Database,
    *,
    accounts: Iterable[str] | None = None,
    cache: ForecastCache | None = None,
) -> dict[str, list[dict[str, Any]]]:
    wanted = set(accounts) if accounts is not None else None
    out: dict[str, list[dict[str, Any]]] = {}
    for acc in config.accounts:
        if not acc.sites or (wanted is not None and acc.id not in wanted):
            continue
        with db.session(readonly=True) as s:
            reports = site_reports(config, s, acc)
        with db.session() as s:
            record_site_reports(s, config, acc, reports, cache=cache)
        out[acc.id] = reports
    return out


@dataclass
class Poller:
    """What the service runs each round."""

    config: Config
    db: Database

    def __post_init__(self) -> None:
        self.cache = ForecastCache()

    def poll(self) -> list[QuotaReading]:
        return poll_mailboxes(self.config, self.db, cache=self.cache)

    def scan(self) -> dict[str, list[dict[str, Any]]]:
        return scan_sites(self.config, self.db, cache=self.cache)
