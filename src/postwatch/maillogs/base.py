"""Common parts of the line parsers: counters and the never-raise wrapper."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, tzinfo
from typing import Generic, TypeVar

T = TypeVar("T")

#: The longest line any parser looks into (characters, newline excluded).  A longer line is
#: counted in ``unparsed`` and never parsed: no MTA or web server writes one (Postfix's SMTP
#: line limit is 2 KB, rsyslog's default message size 8 KB, Apache's request line 8 KB), and it
#: bounds the work one hostile line can cause.  Readers that cut lines (the live follower,
#: ``investigate``'s line reader) hand out at most ``MAX_LINE + 1`` characters of such a line.
MAX_LINE = 32 * 1024


class LineParser(Generic[T]):
    """A stateful parser for one stream of lines.

    ``parse(line)`` returns a record, or None for a line that says nothing the project needs
    (counted in ``ignored``) or that cannot be parsed (counted in ``unparsed``).  It never
    raises.  One instance per input stream: it keeps the clock state (year, DST fold).
    """

    name = "base"
    #: lines longer than this are counted unparsed without parsing (None: no limit, for tests)
    max_line: int | None = MAX_LINE

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

    def too_long(self, line: str) -> bool:
        """Longer than ``max_line`` (a trailing newline not counted): never parsed."""
        limit = self.max_line
        return limit is not None and len(line) > limit and len(line.rstrip("\r\n")) > limit

    def _parse(self, line: str) -> T | None:  # pragma: no cover - abstract
        """Parse one line (counting it in ``unparsed``/``ignored`` when no record comes out);
        starts with ``if self.too_long(line): self.unparsed += 1; return None``."""
        raise NotImplementedError
