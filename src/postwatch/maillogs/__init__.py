"""Mail-log and access-log parsers shared by the live watch and ``postwatch investigate``.

Public API (everything streams, one line at a time; no parser ever raises on a line):

* ``SyslogMailParser(year=, tz=)`` (alias ``PostfixParser``): syslog-shaped mail logs, classic
  ``Oct  3 09:14:03 host prog[pid]: msg`` (no year: ``year`` or the current year, December ->
  January rollover, DST fold in ``tz``) and RFC 3339 timestamps; Postfix lines plus the Dovecot
  and Exim lines that share the file.  ``EximParser`` for Exim ``main.log``; ``DovecotParser``
  for Dovecot's own log file.  ``parser.parse(line) -> MailLogRecord | None`` for a live
  source (a followed file, a syslog listener), ``parser.iter_records(lines)`` for a stream (same
  result, less per-line overhead); counters ``lines``, ``unparsed`` (not a log line of that
  format, or truncated) and ``ignored`` (a valid line that says nothing about deliveries).
  Lines longer than ``MAX_LINE`` (32 KiB) are counted unparsed and never parsed; every parser
  is linear in a line's length (no backtracking pattern).
* The prefilter, public for callers that filter further (``investigate``): a cheap substring
  test decides before any parsing.  ``parser.can_matter(line)``, ``parser.relevant(lines)``
  (the lines that can matter; the others counted), ``parser.skip(line)`` (count a line not
  parsed), ``parser.parse_wanted(line)`` (the full parse of a line let through);
  ``postfix_can_matter(line)`` and ``names_dovecot_or_exim(line)`` for syslog mail logs.
* ``parse_line(line, *, fmt="postfix", year=None, tz=UTC)``: one-off parse (stateless; prefer a
  parser object per stream).
* ``MailLogRecord``: ``time`` (aware), ``mta``, ``kind`` (``RecordKind``), ``queue_id``,
  ``sender``, ``recipient``, ``orig_to``, ``relay``, ``dsn``, ``status`` (the MTA's word),
  ``delivery`` (``DeliveryStatus``), ``reply``, ``verdict`` (``postwatch.reasons.Verdict``),
  ``raw``.
* ``MessageTracker``: ``feed(record)`` -> ``RecipientOutcome`` (delivered / deferred / bounced /
  expired / rejected, with Verdict and evidence line) and ``MessageSummary`` (message finished);
  ``finish()`` at end of input.  Bounded memory (``max_lifetime``, ``max_open``).
* ``AccessLogParser(fmt="auto", tz=, prefilter=)``: Apache common / combined / vhost_combined,
  nginx default, or an Apache ``LogFormat`` string -> ``AccessRecord``.
* ``detect_format(lines) -> str`` and ``make_mail_parser(name, year=, tz=)``.
"""

from __future__ import annotations

from datetime import tzinfo

from postwatch.maillogs.access import AccessFormatError, AccessLogParser, compile_logformat
from postwatch.maillogs.base import MAX_LINE, LineParser
from postwatch.maillogs.clock import SyslogClock
from postwatch.maillogs.detect import detect_format, make_access_parser, make_mail_parser
from postwatch.maillogs.dovecot import DovecotParser
from postwatch.maillogs.exim import EximParser
from postwatch.maillogs.postfix import PostfixParser, SyslogMailParser, names_dovecot_or_exim
from postwatch.maillogs.postfix import can_matter as postfix_can_matter
from postwatch.maillogs.records import AccessRecord, DeliveryStatus, MailLogRecord, RecordKind
from postwatch.maillogs.tracker import (
    MessageSummary,
    MessageTracker,
    RecipientOutcome,
    RecipientState,
)

__all__ = [
    "MAX_LINE",
    "AccessFormatError",
    "AccessLogParser",
    "AccessRecord",
    "DeliveryStatus",
    "DovecotParser",
    "EximParser",
    "LineParser",
    "MailLogRecord",
    "MessageSummary",
    "MessageTracker",
    "PostfixParser",
    "RecipientOutcome",
    "RecipientState",
    "RecordKind",
    "SyslogClock",
    "SyslogMailParser",
    "compile_logformat",
    "detect_format",
    "make_access_parser",
    "make_mail_parser",
    "names_dovecot_or_exim",
    "parse_line",
    "postfix_can_matter",
]


def parse_line(
    line: str, *, fmt: str = "postfix", year: int | None = None, tz: tzinfo | None = None
) -> MailLogRecord | None:
    """Parse one mail-log line without stream state (DST fold and year rollover need a parser
    object).  Never raises."""
    parser = make_mail_parser(fmt, year=year, tz=tz)
    result = parser.parse(line)
    return result if isinstance(result, MailLogRecord) else None
