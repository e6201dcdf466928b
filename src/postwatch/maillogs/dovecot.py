"""Dovecot log lines: ``save failed ... Quota exceeded`` and LMTP/LDA quota rejections.

Two shapes are understood:

* through syslog: ``Oct 21 09:14:03 host dovecot: lmtp(info@gym.example)<123><Ab>: Info:
  msgid=<x@y>: save failed to INBOX: Quota exceeded (mailbox for user is full)``
* Dovecot's own ``log_path`` / ``info_log_path`` file (no host, no program):
  ``Oct 21 09:14:03 lmtp(info@gym.example)<123><Ab>: Info: msgid=<x@y>: save failed ...``
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo

from postwatch.maillogs.base import LineParser
from postwatch.maillogs.clock import SyslogClock, parse_iso
from postwatch.maillogs.records import MailLogRecord, RecordKind
from postwatch.reasons import classify

# Linear: a user name stops at the next "(" and a bracketed Message-ID at the next "<", so the
# scans from two starts never overlap.
_USER_RE = re.compile(r"\b(lmtp|lda|deliver|imap|pop3|quota-status)\(([^()]*)\)")
_MSGID_RE = re.compile(r"msgid=(<[^<>]*>|\S+?)(?::|\s|$)")


def parse_dovecot_body(
    body: str, time: datetime, raw: str, *, host: str | None = None
) -> MailLogRecord | None:
    """The message part of a Dovecot line; a record only for quota failures."""
    if "uota" not in body:  # cheap test before any regex ("Quota", "quota")
        return None
    lowered = body.lower()
    if (
        "quota exceeded" not in lowered
        and "over quota" not in lowered
        and ("mailbox is full" not in lowered)
    ):
        return None
    m = _USER_RE.search(body, 0, 600)  # the service comes first: no need to scan a long line
    service = m.group(1) if m else ""
    user = m.group(2) if m else None
    mid = _MSGID_RE.search(body)
    # the diagnostic: from "save failed" / "Rejected" / "Error" onwards, else the whole body
    start = -1
    for marker in ("save failed", "Rejected", "rejected", "Error: "):
        start = body.find(marker)
        if start >= 0:
            break
    text = body[start:] if start >= 0 else body
    return MailLogRecord(
        time=time,
        mta="dovecot",
        kind=RecordKind.QUOTA,
        raw=raw,
        program=f"dovecot/{service}" if service else "dovecot",
        host=host,
        recipient=user,
        reply=text,
        verdict=classify(text, context=f"dovecot/{service}" if service else "dovecot"),
        message_id=mid.group(1).strip("<>") if mid else None,
    )


class DovecotParser(LineParser[MailLogRecord]):
    """Dovecot's own log file (``log_path``), also accepting syslog-shaped Dovecot lines."""

    name = "dovecot"

    def __init__(self, *, year: int | None = None, tz: tzinfo | None = None) -> None:
        super().__init__(year=year, tz=tz)
        self.clock = SyslogClock(year=year, tz=self.tz)

    def _parse(self, line: str) -> MailLogRecord | None:
        limit = self.max_line
        if limit is not None and len(line) > limit and self.too_long(line):
            self.unparsed += 1
            return None
        line = line.rstrip("\r\n")
        if len(line) > 16 and line[3] == " " and line[15] == " ":
            time = self.clock.parse(line[:15])
            body = line[16:]
        elif line[4:5] == "-" and line[10:11] in ("T", " "):
            sp = line.find(" ", 11 if line[10] == " " else 0)
            time = parse_iso(line[:sp], self.tz) if sp > 0 else None
            body = line[sp + 1 :]
        else:
            time = None
            body = ""
        if time is None:
            self.unparsed += 1
            return None
        record = parse_dovecot_body(body, time, line)
        if record is None:
            self.ignored += 1
        return record
