"""Postfix lines in syslog files (classic ``Mmm dd hh:mm:ss`` or RFC 3339 timestamps).

:class:`SyslogMailParser` reads a syslog-shaped mail log such as Debian's ``/var/log/mail.log``
or Postfix's own ``maillog_file``: Postfix lines (any ``postfix*/daemon`` program name,
multi-instance names included), Dovecot lines (quota failures) and Exim lines sent to syslog.
Lines of other programs are ignored (counted in ``ignored``), lines without a syslog header
are counted in ``unparsed``.

Understood Postfix messages::

    QID: from=<s>, size=N, nrcpt=N (queue active)           -> ARRIVAL (qmgr)
    QID: to=<r>, [orig_to=<o>,] relay=R, ..., dsn=D, status=S (reply)   -> DELIVERY
    QID: from=<s>, status=expired, returned to sender       -> EXPIRED
    QID: removed                                            -> REMOVED
    QID: message-id=<id>                                    -> MESSAGE_ID (cleanup)
    QID: sender non-delivery notification: QID2             -> NOTIFICATION
    NOQUEUE: reject: RCPT from h[a]: 552 5.2.2 ...; from=<s> to=<r> ...   -> REJECT
    QID: milter-reject: END-OF-MESSAGE from ...; from=<s> to=<r> ...      -> REJECT
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import datetime, tzinfo

from postwatch.maillogs.base import LineParser
from postwatch.maillogs.clock import SyslogClock, parse_iso
from postwatch.maillogs.dovecot import parse_dovecot_body
from postwatch.maillogs.records import DeliveryStatus, MailLogRecord, RecordKind
from postwatch.reasons import classify

# Every pattern here is linear in the line's length: no two unbounded parts can trade
# characters (issue 11: ``.*?dsn=...,.*?status=`` was quadratic on ``dsn=a,`` x 10,000).
# The head of a delivery line, ``to=<r>, [orig_to=<o>,] relay=R,``, is matched by a regex
# whose parts are delimited by characters they exclude; the fields after it are found with
# ``str.find`` in their fixed order (``... dsn=D, status=S (reply)``).
_DELIVERY_HEAD_RE = re.compile(
    r"to=(?:<([^>]*)>|([^,\s]*)),"
    r"(?: orig_to=(?:<([^>]*)>|([^,\s]*)),)?"
    r" relay=([^,]*),"
)
_STATUS_WORD_RE = re.compile(r"[A-Za-z-]+")
_FROM_RE = re.compile(r"from=(?:<([^>]*)>|([^,\s]*))")
#: after the ``; from=<`` of a reject line: ``s> to=<r>``
_REJECT_TAIL_RE = re.compile(r"([^>]*)> to=<([^>]*)>")

_DELIVERY = RecordKind.DELIVERY
_ARRIVAL = RecordKind.ARRIVAL
_REMOVED = RecordKind.REMOVED
_MESSAGE_ID = RecordKind.MESSAGE_ID
_SENT = DeliveryStatus.SENT
_DEFERRED = DeliveryStatus.DEFERRED


def can_matter(line: str) -> bool:
    """The prefilter of syslog mail logs: whether a line can say anything about a delivery.

    A cheap substring test before any parsing (most lines of a busy server -- connect,
    disconnect, TLS, anvil -- say nothing): ``to=``, ``from=``, ``removed``, ``reject``,
    ``notification``, ``message-id=``, or a Dovecot or Exim program name."""
    return (
        "to=" in line
        or "from=" in line
        or line.endswith(("removed\n", "removed"))
        or "reject" in line
        or "notification" in line
        or names_dovecot_or_exim(line)
        or "message-id=" in line
    )


def names_dovecot_or_exim(line: str) -> bool:
    """The line's program (within its first 130 characters) is Dovecot or Exim: a line that
    can matter (a quota failure, an Exim delivery) without any Postfix keyword."""
    return line.find(" dovecot", 15, 130) >= 0 or line.find(" exim", 15, 130) >= 0

_STATUS = {
    "sent": DeliveryStatus.SENT,
    "deferred": DeliveryStatus.DEFERRED,
    "bounced": DeliveryStatus.BOUNCED,
    "expired": DeliveryStatus.EXPIRED,
}


def parse_postfix_body(
    daemon: str, program: str, msg: str, time: datetime, raw: str, host: str | None = None
) -> MailLogRecord | None:
    """The message part of a Postfix line (after ``program[pid]: ``); None if not of interest."""
    colon = msg.find(": ")
    if colon < 0:
        return None
    qid = msg[:colon]
    rest = msg[colon + 2 :]
    if qid == "NOQUEUE":
        if rest.startswith("reject:") or rest.startswith("milter-reject:"):
            return _reject(None, program, rest, time, raw, host)
        return None
    if not (4 <= len(qid) <= 24 and qid.isalnum()):
        return None
    first = rest[:3]
    if first == "to=":
        m = _DELIVERY_HEAD_RE.match(rest)
        if m is None:
            raise ValueError("truncated delivery line")
        status, dsn, reply = _delivery_tail(rest, m.end())
        delivery = _STATUS.get(status)
        verdict = None
        if delivery is not None and delivery is not _SENT:
            verdict = classify(reply or "", status=dsn, context=program)
            permanent = delivery is not _DEFERRED
            if verdict.permanent is not permanent:
                verdict = replace(verdict, permanent=permanent)
        # positional: this is the hot path (a keyword call costs three times as much)
        return MailLogRecord(
            time,
            "postfix",
            _DELIVERY,
            raw,
            program,
            host,
            qid,
            None,
            m.group(1) if m.group(1) is not None else m.group(2),
            m.group(3) if m.group(3) is not None else m.group(4),
            m.group(5),
            dsn,
            status,
            delivery,
            reply,
            verdict,
        )
    if first == "fro":
        m = _FROM_RE.match(rest)
        if m is None:
            return None
        sender = m.group(1) if m.group(1) is not None else m.group(2)
        if "status=expired" in rest:
            return MailLogRecord(
                time=time,
                mta="postfix",
                kind=RecordKind.EXPIRED,
                raw=raw,
                program=program,
                host=host,
                queue_id=qid,
                sender=sender,
                status="expired",
                delivery=DeliveryStatus.EXPIRED,
            )
        return MailLogRecord(time, "postfix", _ARRIVAL, raw, program, host, qid, sender)
    if rest == "removed":
        return MailLogRecord(time, "postfix", _REMOVED, raw, program, host, qid)
    if first == "mes" and rest.startswith("message-id="):
        mid = rest[11:].split(" ", 1)[0].strip().strip(",")
        if not mid:
            return None
        # positional, like the delivery line: one per message on a busy server
        return MailLogRecord(
            time, "postfix", _MESSAGE_ID, raw, program, host, qid,
            None, None, None, None, None, None, None, None, None,
            mid if mid[:1] == "<" else f"<{mid}>",
        )
    if first == "sen" and " notification: " in rest:
        return MailLogRecord(
            time=time,
            mta="postfix",
            kind=RecordKind.NOTIFICATION,
            raw=raw,
            program=program,
            host=host,
            queue_id=qid,
            related_id=rest.rsplit(": ", 1)[1].strip(),
        )
    if first in ("rej", "mil") and "reject:" in rest[:15]:
        return _reject(qid, program, rest, time, raw, host)
    return None


def _delivery_tail(rest: str, pos: int) -> tuple[str, str | None, str | None]:
    """``status``, ``dsn`` and the reply of a delivery line, after its ``relay=R,`` (at ``pos``).

    The first ``status=WORD``; ``dsn=D,`` before it; the reply is what follows ``status=WORD``
    and an optional ``,``/`` `` in parentheses.  Each character is looked at a bounded number
    of times."""
    find = rest.find
    st = find("status=", pos)
    while True:
        if st < 0:
            raise ValueError("truncated delivery line")
        w = _STATUS_WORD_RE.match(rest, st + 7)
        if w is not None:
            break
        st = find("status=", st + 7)
    dsn: str | None = None
    d = find("dsn=", pos, st)
    if d >= 0:
        comma = find(",", d + 4, st)
        if comma >= 0:
            dsn = rest[d + 4 : comma]
    status = w.group(0)
    reply: str | None = None
    r = w.end()
    if rest.startswith(",", r):
        r += 1
    if rest.startswith(" ", r):
        r += 1
    if rest.startswith("(", r):
        text = rest[r + 1 :]
        nl = text.find("\n")
        if nl >= 0:
            text = text[:nl]
        reply = text[:-1] if text.endswith(")") else text
    return status, dsn, reply


def _split_reject(rest: str) -> tuple[str, str, str, str] | None:
    """``reject: WHAT from CLIENT: REPLY; from=<S> to=<R> ...`` -> (client, reply, s, r).

    CLIENT is the first `` from X: `` (X without blanks); the sender and recipient are those of
    the last ``; from=<S> to=<R>`` (the reply may itself contain ``; from=``).  Linear: one
    backward search for the envelope, then forward searches that never revisit a character."""
    tail = rest.rfind("; from=<")
    if tail < 0:
        return None
    env = _REJECT_TAIL_RE.match(rest, tail + 8)
    if env is None:
        return None
    find = rest.find
    p = find(" from ", rest.find(": ") + 2)
    while 0 <= p < tail:
        start = p + 6
        end = start
        n = len(rest)
        while end < n and not rest[end].isspace():
            end += 1
        if end - start >= 2 and rest[end - 1] == ":" and rest.startswith(" ", end) and end < tail:
            return rest[start : end - 1], rest[end + 1 : tail], env.group(1), env.group(2)
        p = find(" from ", end)
    return None


def _reject(
    qid: str | None, program: str, rest: str, time: datetime, raw: str, host: str | None
) -> MailLogRecord | None:
    parts = _split_reject(rest)
    if parts is None:
        raise ValueError("unparsable reject line")
    relay, reply, sender, recipient = parts
    return MailLogRecord(
        time=time,
        mta="postfix",
        kind=RecordKind.REJECT,
        raw=raw,
        program=program,
        host=host,
        queue_id=qid,
        sender=sender,
        recipient=recipient,
        relay=relay,
        status="reject",
        reply=reply,
        verdict=classify(reply, context=program),
    )


class SyslogMailParser(LineParser[MailLogRecord]):
    """Syslog-shaped mail log: Postfix, plus Dovecot and Exim lines that share the file."""

    name = "postfix"

    def __init__(self, *, year: int | None = None, tz: tzinfo | None = None) -> None:
        super().__init__(year=year, tz=tz)
        self.clock = SyslogClock(year=year, tz=self.tz)
        self._iso_key = ""
        self._iso_val: datetime | None = None
        self._exim: object | None = None

    def can_matter(self, line: str) -> bool:
        return can_matter(line)

    def parse(self, line: str) -> MailLogRecord | None:
        """The base class's ``parse`` with the calls inlined: the live watch's hot path."""
        self.lines += 1
        if not can_matter(line):
            self.skip(line)
            return None
        try:
            return self._parse(line)
        except Exception:  # a parser must never stop on a bad line
            self.unparsed += 1
            return None

    def iter_records(self, lines: Iterable[str]) -> Iterator[MailLogRecord]:
        """Parse a stream of lines; the same as ``parse`` per line, with less overhead."""
        parse = self._parse
        skip = self.skip
        n = 0
        try:
            for line in lines:
                n += 1
                if can_matter(line):
                    try:
                        record = parse(line)
                    except Exception:
                        self.unparsed += 1
                        continue
                    if record is not None:
                        yield record
                else:
                    skip(line)
        finally:
            self.lines += n

    def skip(self, line: str) -> None:
        """A line without any interesting word: check its shape only, and count it.

        Classic timestamps still go through the clock (cached, cheap): it must see every line
        to notice the repeated hour of a DST switch and the new year."""
        limit = self.max_line
        if limit is not None and len(line) > limit and self.too_long(line):
            self.unparsed += 1
            return
        if line[3:4] == " " and line[15:16] == " ":
            if self.clock.parse(line[:15]) is None:
                self.unparsed += 1
            else:
                self.ignored += 1
        elif (line[4:5] == "-" and line[10:11] == "T") or (line[:1] == "<" and ">" in line[:6]):
            self.ignored += 1
        else:
            self.unparsed += 1

    def _parse(self, line: str) -> MailLogRecord | None:
        limit = self.max_line
        if limit is not None and len(line) > limit and self.too_long(line):
            self.unparsed += 1
            return None
        if line.endswith("\n"):
            line = line.rstrip("\r\n")
        if line[:1] == "<":  # RFC 3164 priority from a network forwarder
            end = line.find(">", 1, 6)
            if end > 0:
                line = line[end + 1 :]
        if len(line) > 16 and line[15] == " " and line[3] == " ":
            time = self.clock.parse(line[:15])
            start = 16
        elif line[4:5] == "-" and line[10:11] == "T":
            sp = line.find(" ")
            stamp = line[:sp]
            if stamp == self._iso_key:
                time = self._iso_val
            else:
                time = parse_iso(stamp, self.tz)
                self._iso_key, self._iso_val = stamp, time
            start = sp + 1
        else:
            self.unparsed += 1
            return None
        if time is None:
            self.unparsed += 1
            return None
        hs = line.find(" ", start)
        ps = line.find(": ", hs + 1)
        if hs < 0 or ps < 0:
            self.unparsed += 1
            return None
        host = line[start:hs]
        program = line[hs + 1 : ps]
        bracket = program.find("[")
        if bracket >= 0:
            program = program[:bracket]
        msg = line[ps + 2 :]
        record: MailLogRecord | None
        if "postfix" in program:
            daemon = program[program.rfind("/") + 1 :]
            record = parse_postfix_body(daemon, program, msg, time, line, host)
        elif program.startswith("dovecot"):
            record = parse_dovecot_body(msg, time, line, host=host)
        elif program.startswith("exim"):
            from postwatch.maillogs.exim import parse_exim_body

            record = parse_exim_body(msg, time, line)
            if record is not None:
                record.host = host
        else:
            record = None
        if record is None:
            self.ignored += 1
        return record


PostfixParser = SyslogMailParser
