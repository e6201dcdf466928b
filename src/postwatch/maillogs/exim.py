"""Exim ``main.log`` lines (cPanel and Debian hosts).

``2026-10-21 09:14:03[.123] [+0200] [[pid]] [ID] ...`` where ID is the old 16-character
(``1t5Xyz-0001AB-Cd``) or the new 23-character (``1t5Xyz-000000001AB-CdEf``) message id.
Without ``+zzzz`` the time is local time in ``tz``.

Understood::

    ID <= sender ... [for r1 r2]            -> ARRIVAL (recipients when logged)
    ID => addr [(parent)] [<orig>] R= T= ... C="250 ..."   -> DELIVERY sent (also -> and *>)
    ID == addr ... defer (N): diagnostic    -> DELIVERY deferred
    ID ** addr ...: diagnostic              -> DELIVERY bounced (``retry timeout exceeded``:
                                               expired, failed for good)
    ID Completed                            -> REMOVED
    H=... F=<s> rejected RCPT <r>: why      -> REJECT (with or without ID)
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, tzinfo

from postwatch.maillogs.base import LineParser
from postwatch.maillogs.clock import LocalClock, cached_offset
from postwatch.maillogs.records import DeliveryStatus, MailLogRecord, RecordKind
from postwatch.reasons import classify

# Linear in the line's length: a bracketed address stops at a blank (an IP address has none),
# so a run of ``: host x [`` without ``]`` cannot make every start scan to the end.
_HOST_RE = re.compile(r" H=(\S+(?: \[[^\]\s]*\])?)")
_ERR_HOST_RE = re.compile(r": host (\S+ \[[^\]\s]*\])")  # older Exim: in the error text
_C_RE = re.compile(r' C="((?:[^"\\]|\\.)*)"')
#: after `` rejected RCPT``: ``<r>: why``
_REJECT_TAIL_RE = re.compile(r" <?([^>:\s]*)>?:? ?(.*)")
_ALPHANUM = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

_ARROWS = {
    "=>": DeliveryStatus.SENT,
    "->": DeliveryStatus.SENT,
    "*>": DeliveryStatus.SENT,
    "==": DeliveryStatus.DEFERRED,
    "**": DeliveryStatus.BOUNCED,
}


def is_exim_id(token: str) -> bool:
    n = len(token)
    if n == 16:
        return (
            token[6] == "-"
            and token[13] == "-"
            and (token[:6].isalnum() and token[7:13].isalnum() and token[14:].isalnum())
        )
    if n == 23:
        return (
            token[6] == "-"
            and token[18] == "-"
            and (token[:6].isalnum() and token[7:18].isalnum() and token[19:].isalnum())
        )
    return False


def _strip_addr(token: str) -> str:
    return token.strip("<>:,")


def parse_exim_body(body: str, time: datetime, raw: str) -> MailLogRecord | None:
    """The part of an Exim line after the timestamp (and pid)."""
    sp = body.find(" ")
    token = body[:sp] if sp > 0 else body
    if is_exim_id(token):
        qid: str | None = token
        rest = body[sp + 1 :] if sp > 0 else ""
    else:
        qid = None
        rest = body
    arrow = rest[:2]
    if qid is not None and rest[2:3] == " ":
        if arrow == "<=":
            return _arrival(qid, rest, time, raw)
        delivery = _ARROWS.get(arrow)
        if delivery is not None:
            return _delivery(qid, delivery, rest, time, raw)
    if qid is not None and rest.startswith("Completed"):
        return MailLogRecord(
            time=time, mta="exim", kind=RecordKind.REMOVED, raw=raw, program="exim", queue_id=qid
        )
    if "rejected RCPT" in rest:
        m = _reject_parts(rest)
        if m is None:
            raise ValueError("unparsable exim reject")
        reply = m[2]
        return MailLogRecord(
            time=time,
            mta="exim",
            kind=RecordKind.REJECT,
            raw=raw,
            program="exim",
            queue_id=qid,
            sender=m[0],
            recipient=m[1] or None,
            status="reject",
            reply=reply,
            verdict=classify(reply, context="exim"),
            relay=(h.group(1) if (h := _HOST_RE.search(" " + rest)) else None),
        )
    return None


def _reject_parts(rest: str) -> tuple[str | None, str, str] | None:
    """``[... F=<s>] rejected RCPT <r>: why`` -> (s, r, why): str.find, no backtracking."""
    at = rest.find(" rejected RCPT")
    if at < 0:
        return None
    sender: str | None = None
    if rest.endswith(">", 0, at):
        f = rest.find(" F=<", rest.rfind(">", 0, at - 1) + 1, at)
        if f >= 0:
            sender = rest[f + 4 : at - 1]
    m = _REJECT_TAIL_RE.match(rest, at + 14)
    if m is None:
        return None
    return sender, m.group(1), m.group(2)


def _arrival(qid: str, rest: str, time: datetime, raw: str) -> MailLogRecord:
    parts = rest.split(" ", 2)
    sender = parts[1] if len(parts) > 1 else ""
    if sender == "<>":
        sender = ""
    recipients: tuple[str, ...] = ()
    pos = rest.rfind(" for ")
    if pos > 0:
        tail = rest[pos + 5 :].split()
        if tail and all("@" in t or t.isalnum() for t in tail) and '"' not in rest[pos:]:
            recipients = tuple(_strip_addr(t) for t in tail)
    msgid = None
    i = rest.find(" id=")
    if i > 0:
        msgid = rest[i + 4 :].split(" ", 1)[0].strip("<>")
    return MailLogRecord(
        time=time,
        mta="exim",
        kind=RecordKind.ARRIVAL,
        raw=raw,
        program="exim",
        queue_id=qid,
        sender=sender,
        recipients=recipients,
        message_id=msgid,
        relay=(h.group(1) if (h := _HOST_RE.search(rest)) else None),
    )


def _delivery(
    qid: str, delivery: DeliveryStatus, rest: str, time: datetime, raw: str
) -> MailLogRecord:
    body = rest[3:]
    tokens = body.split(" ", 3)
    recipient = _strip_addr(tokens[0])
    orig: str | None = None
    for tok in tokens[1:3]:
        if tok.startswith("<"):
            orig = _strip_addr(tok)
            break
        if not tok.startswith("("):
            break
    relay = None
    h = _HOST_RE.search(body) or _ERR_HOST_RE.search(body)
    if h:
        relay = h.group(1)
    reply: str | None = None
    verdict = None
    status = delivery.value
    if delivery is DeliveryStatus.SENT:
        c = _C_RE.search(body)
        if c:
            reply = c.group(1)
    else:
        colon = body.find(": ")
        reply = body[colon + 2 :] if colon >= 0 else body
        verdict = classify(reply, context="exim")
        if delivery is DeliveryStatus.BOUNCED and "retry timeout exceeded" in reply:
            delivery = DeliveryStatus.EXPIRED
            status = "expired"
        permanent = delivery is not DeliveryStatus.DEFERRED
        if verdict.permanent is not permanent:
            verdict = replace(verdict, permanent=permanent)
    return MailLogRecord(
        time=time,
        mta="exim",
        kind=RecordKind.DELIVERY,
        raw=raw,
        program="exim",
        queue_id=qid,
        recipient=recipient,
        orig_to=orig,
        relay=relay,
        dsn=verdict.status if verdict else None,
        status=status,
        delivery=delivery,
        reply=reply,
        verdict=verdict,
    )


class EximParser(LineParser[MailLogRecord]):
    """Exim main.log (also tolerates the same lines behind a syslog header: see postfix.py)."""

    name = "exim"

    def __init__(self, *, year: int | None = None, tz: tzinfo | None = None) -> None:
        super().__init__(year=year, tz=tz)
        self.clock = LocalClock(self.tz)
        self._key = ""
        self._val: datetime | None = None

    def _parse(self, line: str) -> MailLogRecord | None:
        limit = self.max_line
        if limit is not None and len(line) > limit and self.too_long(line):
            self.unparsed += 1
            return None
        if line.endswith("\n"):
            line = line.rstrip("\r\n")
        if not (len(line) > 20 and line[4] == "-" and line[10] == " " and line[13] == ":"):
            self.unparsed += 1
            return None
        pos = 19
        if line[pos] == ".":  # +millisec
            pos += 1
            while pos < len(line) and line[pos].isdigit():
                pos += 1
        stamp_end = pos
        tz: tzinfo | None = None
        if line[pos + 1 : pos + 2] in ("+", "-") and line[pos + 6 : pos + 7] == " ":
            tz = cached_offset(line[pos + 1 : pos + 6])
            if tz is not None:
                pos += 6
        key = line[:pos]
        if key == self._key:
            time = self._val
        else:
            naive = datetime.fromisoformat(line[:stamp_end])
            time = naive.replace(tzinfo=tz) if tz is not None else self.clock.resolve(naive)
            self._key, self._val = key, time
        assert time is not None
        body = line[pos + 1 :]
        if body[:1] == "[":  # [pid]
            end = body.find("] ")
            if end > 0:
                body = body[end + 2 :]
        record = parse_exim_body(body, time, line)
        if record is None:
            self.ignored += 1
        return record
