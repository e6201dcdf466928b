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
        """One line of a live source: the prefilter, then the full parse; counted."""
        self.lines += 1
        if not self.can_matter(line):
            self.skip(line)
            return None
        return self.parse_wanted(line)

    def iter_records(self, lines: Iterable[str]) -> Iterator[T]:
        """Parse a stream of lines, yielding the records (same counters as ``parse``)."""
        parse = self.parse_wanted
        for line in self.relevant(lines):
            record = parse(line)
            if record is not None:
                yield record

    # --- the prefilter (public: the live watch and ``investigate`` build on it) -------------
    def can_matter(self, line: str) -> bool:
        """Whether the line can say anything this parser reports: a cheap substring test,
        no regex.  False means :meth:`skip` it; True means :meth:`parse_wanted` it (which may
        still find nothing).  Every parser: True unless it knows better."""
        return True

    def relevant(self, lines: Iterable[str]) -> Iterator[str]:
        """The lines that can matter; every line is counted in ``lines``, the others are
        counted by :meth:`skip`.  Parse each one yielded with :meth:`parse_wanted`."""
        can_matter = self.can_matter
        skip = self.skip
        n = 0
        try:
            for line in lines:
                n += 1
                if can_matter(line):
                    yield line
                else:
                    skip(line)
        finally:
            self.lines += n

    def skip(self, line: str) -> None:
        """Count a line that is not parsed (the prefilter said no): ``unparsed`` when it is
        over-long or not of this format, else ``ignored``.  Does not count ``lines``."""
        limit = self.max_line
        if limit is not None and len(line) > limit and self.too_long(line):
            self.unparsed += 1
        else:
            self.ignored += 1

    def parse_wanted(self, line: str) -> T | None:
        """Fully parse a line the prefilter let through (or that the caller wants parsed):
        a record, or None counted in ``unparsed``/``ignored``.  Does not count ``lines``;
        never raises."""
        try:
            return self._parse(line)
        except Exception:  # a parser must never stop on a bad line
            self.unparsed += 1
            return None

    def too_long(self, line: str) -> bool:
        """Longer than ``max_line`` (a trailing newline not counted): never parsed."""
        limit = self.max_line
        return limit is not None and len(line) > limit and len(line.rstrip("\r\n")) > limit

    def _parse(self, line: str) -> T | None:  # pragma: no cover - abstract
        """Parse one line (counting it in ``unparsed``/``ignored`` when no record comes out);
        starts by counting an over-long line (:meth:`too_long`) as unparsed."""
        raise NotImplementedError
