"""Which parser fits a log: ``detect_format(lines)`` and ``make_parser(name, ...)``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import tzinfo
from itertools import islice

from postwatch.maillogs.access import _COMBINED_RE, _VHOST_RE, AccessLogParser
from postwatch.maillogs.base import LineParser
from postwatch.maillogs.dovecot import DovecotParser
from postwatch.maillogs.exim import EximParser, is_exim_id
from postwatch.maillogs.postfix import SyslogMailParser
from postwatch.maillogs.records import MailLogRecord

MAIL_FORMATS = ("postfix", "exim", "dovecot")
ACCESS_FORMATS = ("combined", "common", "vhost_combined")
UNKNOWN = "unknown"


def _score(line: str) -> str | None:
    line = line.rstrip("\r\n")
    if not line:
        return None
    if len(line) > 20 and line[4] == "-" and line[10] == " " and line[13] == ":":
        rest = line[20:].split(" ", 3)
        for tok in rest[:3]:
            if is_exim_id(tok) or tok in ("<=", "=>"):
                return "exim"
        return "exim" if "exim" in line[:60] else None
    if (len(line) > 16 and line[3] == " " and line[15] == " ") or (
        line[4:5] == "-" and line[10:11] == "T"
    ):
        head = line[:120]
        if " postfix" in head or " dovecot" in head or " exim" in head:
            return "postfix"
        if "lmtp(" in head or "imap(" in head or "lda(" in head or "deliver(" in head:
            return "dovecot"
        return None
    b = line.find(" [")
    if b > 0 and '"' in line:
        if line.count(" ", 0, b) == 3 and _VHOST_RE.match(line):
            return "vhost_combined"
        m = _COMBINED_RE.match(line)
        if m:
            return "combined" if m.group(7) is not None else "common"
    return None


def detect_format(lines: Iterable[str], *, sample: int = 200) -> str:
    """The most likely format of the first ``sample`` lines: ``postfix`` (any syslog-shaped
    mail log, Dovecot and Exim lines included), ``exim``, ``dovecot``, ``combined``,
    ``common``, ``vhost_combined``, or ``unknown``."""
    counts: dict[str, int] = {}
    for line in islice(lines, sample):
        try:
            name = _score(line)
        except Exception:
            name = None
        if name:
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        return UNKNOWN
    if "vhost_combined" in counts and counts.get("combined", 0) + counts.get("common", 0):
        return (
            "vhost_combined"
            if counts["vhost_combined"] >= counts.get("combined", 0)
            else ("combined")
        )
    return max(counts.items(), key=lambda kv: kv[1])[0]


def make_mail_parser(
    name: str, *, year: int | None = None, tz: tzinfo | None = None
) -> LineParser[MailLogRecord]:
    """A fresh parser for one mail-log stream."""
    if name == "postfix" or name == "syslog":
        return SyslogMailParser(year=year, tz=tz)
    if name == "exim":
        return EximParser(year=year, tz=tz)
    if name == "dovecot":
        return DovecotParser(year=year, tz=tz)
    raise ValueError(f"unknown mail log format {name!r} (expected postfix, exim or dovecot)")


def make_access_parser(
    name: str = "auto", *, tz: tzinfo | None = None, prefilter: str | None = None
) -> AccessLogParser:
    return AccessLogParser(name, tz=tz, prefilter=prefilter)
