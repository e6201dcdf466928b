"""Common parts of the line parsers: counters and the never-raise wrapper."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, tzinfo
from typing import Generic, TypeVar

T = TypeVar("T")


class LineParser(Generic[T]):
    """A stateful parser for one stream of lines.

    ``parse(line)`` returns a record, or None for a line that says nothing the project needs
    (counted in ``ignored``) or that cannot be parsed (counted in ``unparsed``).  It never
    raises.  One instance per input stream: it keeps the clock state (year, DST fold).
    """

    name = "base"

    def __init__(self, *, year: int | None = None, tz: tzinfo | None = None) -> None:
        self.tz: tzinfo = tz if tz is not None else UTC
        self.year = year
        self.lines = 0
        self.unparsed = 0
        self.ignored = 0

    def parse(self, line: str) -> T | None:
        self.lines += 1
        try:
            return self._parse(line)
        except Exception:  # a parser must never stop on a bad line
            self.unparsed += 1
            return None

    def iter_records(self, lines: Iterable[str]) -> Iterator[T]:
        """Parse a stream of lines, yielding the records (same counters as ``parse``)."""
        parse = self.parse
        for line in lines:
            record = parse(line)
            if record is not None:
                yield record

    def _parse(self, line: str) -> T | None:  # pragma: no cover - abstract
        raise NotImplementedError
