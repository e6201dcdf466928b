"""Timestamps of log lines: classic syslog (no year, local time), RFC 3339, Exim, Apache.

Classic syslog timestamps (``Oct  3 09:14:03``) carry neither year nor offset.  A
:class:`SyslogClock` belongs to one input stream and resolves them:

* the year is ``year`` (or the current year when None) for the first line, and advances when
  the month goes backwards by more than a few months (December -> January);
* the local time is resolved in ``tz``; in the repeated hour of a DST switch (autumn), a jump
  backwards of more than 30 minutes switches to the second occurrence (``fold=1``) until the
  ambiguous hour is over.

Results are cached per distinct timestamp string: a busy log has many lines per second.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo

MONTHS = {
    "Jan": 1,
    "Feb": 2,
    "Mar": 3,
    "Apr": 4,
    "May": 5,
    "Jun": 6,
    "Jul": 7,
    "Aug": 8,
    "Sep": 9,
    "Oct": 10,
    "Nov": 11,
    "Dec": 12,
}

_BACKWARDS = timedelta(minutes=30)


def _is_ambiguous(naive: datetime, tz: tzinfo) -> bool:
    a = naive.replace(tzinfo=tz, fold=0).utcoffset()
    b = naive.replace(tzinfo=tz, fold=1).utcoffset()
    return a != b


class SyslogClock:
    """Turns ``Mmm dd hh:mm:ss`` into aware datetimes for one stream of lines."""

    __slots__ = ("_cache_key", "_cache_val", "_fold", "_prev", "tz", "year")

    def __init__(self, *, year: int | None = None, tz: tzinfo | None = None) -> None:
        self.tz: tzinfo = tz if tz is not None else UTC
        self.year: int | None = year
        self._cache_key = ""
        self._cache_val: datetime | None = None
        self._prev: datetime | None = None  # previous naive local time
        self._fold = 0

    def parse(self, stamp: str) -> datetime | None:
        """``stamp`` is exactly 15 characters like ``Oct  3 09:14:03``; None if malformed."""
        if stamp == self._cache_key:
            return self._cache_val
        try:
            month = MONTHS[stamp[0:3]]
            day = int(stamp[4:6])
            if stamp[9] != ":" or stamp[12] != ":":
                return None
            hour = int(stamp[7:9])
            minute = int(stamp[10:12])
            second = int(stamp[13:15])
            year = self.year
            if year is None:
                year = self._guess_year(month, day)
            elif self._prev is not None and month < self._prev.month - 6:
                year += 1  # December -> January
                self.year = year
            naive = datetime(year, month, day, hour, minute, second)
        except (KeyError, ValueError, IndexError):
            return None
        value = self._resolve(naive)
        self._cache_key = stamp
        self._cache_val = value
        return value

    def _guess_year(self, month: int, day: int) -> int:
        now = datetime.now(self.tz)
        year = now.year
        # A month later than the current one belongs to last year.
        if month > now.month:
            year -= 1
        self.year = year
        return year

    def _resolve(self, naive: datetime) -> datetime:
        prev = self._prev
        tz = self.tz
        if prev is not None and naive < prev - _BACKWARDS and _is_ambiguous(naive, tz):
            self._fold = 1
        elif self._fold and not _is_ambiguous(naive, tz):
            self._fold = 0
        self._prev = naive
        return naive.replace(tzinfo=tz, fold=self._fold)


class LocalClock:
    """Resolves naive local timestamps (Exim without offset) with the same DST rule."""

    __slots__ = ("_inner",)

    def __init__(self, tz: tzinfo | None = None) -> None:
        self._inner = SyslogClock(year=0, tz=tz)

    def resolve(self, naive: datetime) -> datetime:
        return self._inner._resolve(naive)


def parse_iso(stamp: str, tz: tzinfo) -> datetime | None:
    """RFC 3339 / ISO 8601 timestamp; a missing offset is taken as local time in ``tz``."""
    try:
        value = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value


def parse_offset(text: str) -> tzinfo | None:
    """``+0200`` / ``-0700`` -> a fixed offset, else None."""
    if len(text) != 5 or text[0] not in "+-" or not text[1:].isdigit():
        return None
    minutes = int(text[1:3]) * 60 + int(text[3:5])
    if minutes >= 24 * 60:
        return None
    sign = -1 if text[0] == "-" else 1
    return timezone(sign * timedelta(minutes=minutes))


_OFFSETS: dict[str, tzinfo | None] = {}


def cached_offset(text: str) -> tzinfo | None:
    try:
        return _OFFSETS[text]
    except KeyError:
        value = _OFFSETS[text] = parse_offset(text)
        return value
