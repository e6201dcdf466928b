"""Conditions -> events, with hysteresis: one event per crossing, not per reading.

The state of each subject (a mailbox or a site) is kept in ``capacity_state`` and changed in the
same transaction as the events it causes, so a restart or a second process does not repeat them.

- ``quota_warning`` when the percentage reaches a level above the highest one already warned
  (a jump over several levels is one event, for the highest);
- ``quota_full`` at 100 % or when a ``mailbox_full`` delivery episode is open for the mailbox;
- ``quota_ok`` when it falls under the lowest level minus ``ok_margin`` after any of those;
  on the way down each level is re-armed once the value is ``ok_margin`` under it (silently);
- ``forecast_full`` when the forecast says full within the horizon (re-armed when the forecast
  moves beyond 1.5 times the horizon or stops growing);
- ``quota_source_failed`` once when a source starts failing (re-armed by a good reading).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from postwatch.capacity.forecast import Forecast
from postwatch.store.events import EventKind, record_event
from postwatch.store.models import Event, utcnow
from postwatch.store.models_capacity import CapacityState


@dataclass
class State:
    level: int = 0
    full: bool = False
    forecast: bool = False


@dataclass
class Outcome:
    state: State
    #: (kind, extra data)
    events: list[tuple[EventKind, dict[str, Any]]] = field(default_factory=list)


def evaluate(
    state: State,
    percent: float | None,
    *,
    levels: list[int],
    ok_margin: float,
    full_signal: bool = False,
    forecast_soon: bool | None = None,
) -> Outcome:
    """The pure rule. ``forecast_soon``: True within the horizon, False far or not growing,
    None in between (keeps the state)."""
    levels = sorted(levels)
    new = State(state.level, state.full, state.forecast)
    out = Outcome(new)
    full_now = full_signal or (percent is not None and percent >= 100.0)
    if full_now:
        if not new.full:
            why = (
                "mailbox_full delivery event"
                if full_signal and (percent is None or percent < 100.0)
                else "at or over the limit"
            )
            out.events.append((EventKind.QUOTA_FULL, {"level": 100, "why": why}))
            new.full = True
        new.level = max(new.level, levels[-1])
    elif percent is not None:
        if new.full and percent < 100.0 - ok_margin:
            new.full = False
        crossed = [lv for lv in levels if percent >= lv]
        if crossed and crossed[-1] > new.level and not new.full:
            out.events.append((EventKind.QUOTA_WARNING, {"level": crossed[-1]}))
            new.level = crossed[-1]
        armed = [lv for lv in levels if percent >= lv - ok_margin]
        keep = armed[-1] if armed else 0
        if not new.full and keep < new.level:
            if keep == 0:
                out.events.append((EventKind.QUOTA_OK, {"level": 0}))
            new.level = keep
    if forecast_soon is True and not new.forecast and not new.full:
        out.events.append((EventKind.FORECAST_FULL, {}))
        new.forecast = True
    elif forecast_soon is False:
        new.forecast = False
    return out


def forecast_soon(fc: Forecast | None, horizon: timedelta, now: datetime) -> bool | None:
    if fc is None or fc.status == "too few readings":
        return None
    if fc.full_at is None:
        return False
    left = fc.full_at - now
    if left <= horizon:
        return True
    if left > horizon * 1.5:
        return False
    return None


def state_rows(
    session: Session, subject: str, names: dict[str, str | None]
) -> dict[str, CapacityState]:
    """The state rows of ``names`` ({name: account}), created if missing, locked until the
    transaction ends.

    Creation is an INSERT .. ON CONFLICT DO NOTHING so that two processes (the service and a
    Dovecot hook) meeting a new mailbox at the same moment do not collide.
    """
    if not names:
        return {}
    dialect = session.get_bind().dialect.name
    now = utcnow()
    values = [
        {
            "subject": subject,
            "name": n,
            "account": a,
            "level": 0,
            "full": False,
            "forecast": False,
            "failing": False,
            "updated_at": now,
        }
        for n, a in names.items()
    ]
    ins: Any = None
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        ins = pg_insert(CapacityState).on_conflict_do_nothing()
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        ins = sqlite_insert(CapacityState).on_conflict_do_nothing()
    if ins is not None:
        session.execute(ins, values)
    rows: dict[str, CapacityState] = {}
    keys = list(names)
    for i in range(0, len(keys), 500):
        for row in session.scalars(
            select(CapacityState)
            .where(CapacityState.subject == subject, CapacityState.name.in_(keys[i : i + 500]))
            .with_for_update()
            .execution_options(populate_existing=True)
        ):
            rows[row.name] = row
    for v in values:  # another dialect: plain inserts
        if v["name"] not in rows:
            row = CapacityState(**v)
            session.add(row)
            rows[row.name] = row
    session.flush()
    return rows


def _state_row(session: Session, subject: str, name: str, account: str | None) -> CapacityState:
    return state_rows(session, subject, {name: account})[name]


def apply(
    session: Session,
    *,
    subject: str,
    name: str,
    account: str | None,
    percent: float | None,
    used_bytes: int | None,
    limit_bytes: int | None,
    levels: list[int],
    ok_margin: float,
    full_signal: bool = False,
    forecast: Forecast | None = None,
    horizon: timedelta = timedelta(hours=72),
    via: str | None = None,
    now: datetime | None = None,
    row: CapacityState | None = None,
    read_at: datetime | None = None,
) -> list[Event]:
    """Evaluate one reading (or signal) of a subject and record the events it causes.

    ``read_at``: when ``percent`` was measured (default ``now``); every event says it, so a
    message can name the age of its figure."""
    now = now or utcnow()
    row = row or _state_row(session, subject, name, account)
    res = evaluate(
        State(row.level, row.full, row.forecast),
        percent,
        levels=levels,
        ok_margin=ok_margin,
        full_signal=full_signal,
        forecast_soon=forecast_soon(forecast, horizon, now),
    )
    events = []
    for kind, extra in res.events:
        data: dict[str, Any] = {
            "subject": subject,
            "name": name,
            "level": extra.get("level"),
            "percent": percent,
            "used_bytes": used_bytes,
            "limit_bytes": limit_bytes,
        }
        if percent is not None:
            data["read_at"] = (read_at or now).isoformat()
        if via:
            data["via"] = via
        if "why" in extra:
            data["why"] = extra["why"]
        if kind is EventKind.FORECAST_FULL and forecast is not None:
            data["full_at"] = forecast.full_at.isoformat() if forecast.full_at else None
            data["growth_bytes_per_day"] = forecast.growth_bytes_per_day
            data["full_at_range"] = forecast.as_dict()["full_at_range"]
        events.append(
            record_event(
                session,
                kind,
                account=account,
                mailbox=name if subject == "mailbox" else None,
                data=data,
                at=now,
            )
        )
    row.level, row.full, row.forecast = res.state.level, res.state.full, res.state.forecast
    if percent is not None:
        row.percent = percent
    row.account = account or row.account
    row.updated_at = now
    return events


def source_result(
    session: Session,
    *,
    subject: str,
    name: str,
    account: str | None,
    source: str,
    error: str | None,
    now: datetime | None = None,
    row: CapacityState | None = None,
) -> Event | None:
    """Record ``quota_source_failed`` once when a source starts failing; re-arm on success."""
    row = row or _state_row(session, subject, name, account)
    if error is None:
        row.failing = False
        return None
    if row.failing:
        return None
    row.failing = True
    key = "mailbox" if subject == "mailbox" else "site"
    return record_event(
        session,
        EventKind.QUOTA_SOURCE_FAILED,
        account=account,
        mailbox=name if subject == "mailbox" else None,
        data={key: name, "source": source, "error": error},
        at=now or utcnow(),
    )


def current_state(session: Session, subject: str, name: str) -> CapacityState | None:
    return session.get(CapacityState, (subject, name))
