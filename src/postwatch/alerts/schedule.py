"""Quiet hours, digest times, silences and maintenance windows: pure functions of time."""

from __future__ import annotations

import fnmatch
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from postwatch.config import MaintenanceConfig, SilenceConfig

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _hhmm(text: str) -> time:
    h, m = text.strip().split(":")
    return time(int(h), int(m))


def quiet_until(quiet_hours: str | None, tz: str, now: datetime) -> datetime | None:
    """When ``now`` lies in the quiet hours ("22:00-07:00"), the moment they end; else None."""
    if not quiet_hours:
        return None
    start_s, end_s = quiet_hours.split("-")
    start, end = _hhmm(start_s), _hhmm(end_s)
    z = ZoneInfo(tz)
    loc = now.astimezone(z)
    t = loc.time()
    if start == end:
        return None
    if start < end:
        inside = start <= t < end
        end_day = loc.date()
    else:  # crosses midnight
        inside = t >= start or t < end
        end_day = loc.date() + timedelta(days=1) if t >= start else loc.date()
    if not inside:
        return None
    return datetime.combine(end_day, end, tzinfo=z)


def last_digest_time(spec: str, tz: str, now: datetime) -> datetime | None:
    """The most recent scheduled digest time at or before ``now`` ("daily 08:00",
    "weekly mon 08:00"); None when digests are off."""
    parts = spec.split()
    if not parts or parts[0] == "off":
        return None
    z = ZoneInfo(tz)
    loc = now.astimezone(z)
    at = _hhmm(parts[-1])
    if parts[0] == "daily":
        cand = datetime.combine(loc.date(), at, tzinfo=z)
        if cand > loc:
            cand = datetime.combine(loc.date() - timedelta(days=1), at, tzinfo=z)
        return cand
    day = DAYS.index(parts[1][:3])
    back = (loc.weekday() - day) % 7
    cand = datetime.combine(loc.date() - timedelta(days=back), at, tzinfo=z)
    if cand > loc:
        cand -= timedelta(days=7)
    return cand


def describe_digest(spec: str, lang: str) -> str:
    parts = spec.split()
    if parts[0] == "daily":
        return f"daily at {parts[1]}" if lang == "en" else f"dagelijks om {parts[1]}"
    if parts[0] == "weekly":
        return (
            f"weekly on {parts[1]} at {parts[2]}"
            if lang == "en"
            else f"wekelijks op {parts[1]} om {parts[2]}"
        )
    return ""


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=ZoneInfo("UTC"))


def silence_matches(
    s: SilenceConfig, account: str, concern: str, subject: str, now: datetime
) -> bool:
    starts, ends = _aware(s.starts), _aware(s.ends)
    if starts is not None and now < starts:
        return False
    if ends is not None and now >= ends:
        return False
    if s.account and not fnmatch.fnmatchcase(account, s.account):
        return False
    if s.concern and s.concern != concern:
        return False
    return not (s.subject and not fnmatch.fnmatchcase(subject, s.subject.lower()))


def in_maintenance(m: MaintenanceConfig, account: str, concern: str, now: datetime) -> bool:
    if m.accounts and account not in m.accounts:
        return False
    if m.concerns and concern not in m.concerns:
        return False
    z = ZoneInfo(m.timezone)
    loc = now.astimezone(z)
    start, end = _hhmm(m.start), _hhmm(m.end)
    for back in (0, 1):  # a window that started yesterday may run past midnight
        day = loc.date() - timedelta(days=back)
        if DAYS[day.weekday()] not in m.days:
            continue
        begin = datetime.combine(day, start, tzinfo=z)
        finish = datetime.combine(day, end, tzinfo=z)
        if finish <= begin:
            finish += timedelta(days=1)
        if begin <= loc < finish:
            return True
    return False
