"""Hypothesis properties: no parser raises on any line; what they emit round-trips."""

from __future__ import annotations

import string
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from postwatch.maillogs import (
    AccessLogParser,
    DovecotParser,
    EximParser,
    MessageTracker,
    SyslogMailParser,
    detect_format,
)
from postwatch.maillogs.clock import MONTHS

TZ = ZoneInfo("Europe/Berlin")
MONTH_NAMES = {v: k for k, v in MONTHS.items()}

local = st.text(string.ascii_lowercase + string.digits + ".-_+", min_size=1, max_size=12).filter(
    lambda s: s[0] not in ".-" and s[-1] not in ".-"
)
domain = st.lists(
    st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8), min_size=2, max_size=3
).map(".".join)
address = st.builds(lambda a, b: f"{a}@{b}", local, domain)
qid = st.text("0123456789ABCDEF", min_size=6, max_size=13)
status = st.sampled_from(["5.2.2", "4.2.2", "5.1.1", "2.0.0", "4.4.1", "5.7.1"])
reply = st.text(string.ascii_letters + string.digits + " .:;<>@[]-=/", max_size=80).map(
    lambda s: s.replace("(", "").replace(")", "")
)
moment = st.datetimes(min_value=datetime(2026, 1, 2), max_value=datetime(2026, 12, 30))

ANY_LINE = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8")),
    st.builds(
        lambda a, b: a + b,
        st.sampled_from(
            [
                "Oct 21 09:14:03 mx postfix/smtp[1]: ABCDEF1: to=<",
                "Oct 21 09:14:03 mx postfix/smtpd[1]: NOQUEUE: reject: ",
                "Oct 21 09:14:03 mx postfix/qmgr[1]: ABCDEF1: from=<",
                "2026-10-21T09:14:03+02:00 mx postfix/lmtp[1]: ABCDEF1: to=",
                "2026-10-21 09:14:03 1t5Xyz-0001AB-Cd ",
                "2026-10-21 09:14:03.5 +0200 [1] 1t5Xyz-0001AB-Cd ** ",
                "Oct 21 09:14:03 mx dovecot: lmtp(",
                '1.2.3.4 - - [21/Oct/2026:09:14:03 +0200] "POST ',
                "h:80 1.2.3.4 - - [",
            ]
        ),
        st.text(),
    ),
)


@settings(max_examples=400)
@given(ANY_LINE)
def test_no_parser_raises_and_every_line_is_accounted(line: str) -> None:
    tracker = MessageTracker()
    for parser in (SyslogMailParser(year=2026, tz=TZ), EximParser(tz=TZ), DovecotParser(tz=TZ)):
        rec = parser.parse(line)
        assert parser.lines == 1
        assert (rec is not None) + parser.unparsed + parser.ignored == 1
        if rec is not None:
            assert rec.time.tzinfo is not None and rec.raw
            tracker.feed(rec)
    tracker.finish()
    for fmt in ("auto", "common", "vhost_combined"):
        ap = AccessLogParser(fmt, tz=TZ)
        r = ap.parse(line)
        assert (r is not None) + ap.unparsed + ap.ignored == 1
    detect_format([line])


def _syslog_stamp(t: datetime) -> str:
    return f"{MONTH_NAMES[t.month]} {t.day:2d} {t:%H:%M:%S}"


@given(
    moment,
    qid,
    address,
    st.one_of(st.none(), address),
    status,
    st.sampled_from(["sent", "deferred", "bounced"]),
    reply,
    st.booleans(),
    st.booleans(),
)
def test_postfix_delivery_round_trip(
    t: datetime,
    q: str,
    to: str,
    orig: str | None,
    dsn: str,
    word: str,
    text: str,
    iso: bool,
    brackets: bool,
) -> None:
    t = t.replace(microsecond=0)
    stamp = t.replace(tzinfo=timezone(timedelta(hours=2))).isoformat() if iso else _syslog_stamp(t)
    to_field = f"<{to}>" if brackets else to
    orig_field = f" orig_to=<{orig}>," if orig else ""
    line = (
        f"{stamp} mx postfix/lmtp[4]: {q}: to={to_field},{orig_field} relay=mx[private/"
        f"dovecot-lmtp], delay=0.1, delays=0/0/0/0.1, dsn={dsn}, status={word} ({text})"
    )
    r = SyslogMailParser(year=t.year, tz=TZ).parse(line)
    assert r is not None
    assert (r.queue_id, r.recipient, r.orig_to, r.dsn, r.status, r.reply) == (
        q,
        to,
        orig,
        dsn,
        word,
        text,
    )
    assert r.time.replace(tzinfo=None) == t
    assert (r.verdict is None) == (word == "sent")


@given(
    moment,
    st.sampled_from(["1t5Xyz-0001AB-Cd", "1t5Xyz-000000001AB-CdEf"]),
    address,
    st.sampled_from(["=>", "==", "**"]),
    reply,
    st.booleans(),
)
def test_exim_round_trip(t: datetime, q: str, rcpt: str, arrow: str, text: str, pid: bool) -> None:
    t = t.replace(microsecond=0)
    line = (
        f"{t:%Y-%m-%d %H:%M:%S}{' [77]' if pid else ''} {q} {arrow} {rcpt} R=r T=t"
        f"{': ' + text if arrow != '=>' else ''}"
    )
    r = EximParser(tz=TZ).parse(line)
    assert r is not None
    assert (r.queue_id, r.recipient, r.time.replace(tzinfo=None)) == (q, rcpt, t)
    if arrow != "=>":
        assert r.reply == text


ua = st.text(
    string.printable.replace("\n", "").replace("\r", "").replace("\x0b", "").replace("\x0c", ""),
    max_size=60,
)


@given(
    moment,
    st.sampled_from(["192.0.2.1", "2001:db8::1"]),
    st.sampled_from(["GET", "POST"]),
    st.text(string.ascii_letters + "/-_", min_size=1, max_size=20),
    st.integers(100, 599),
    ua,
    st.one_of(st.none(), st.sampled_from(["gym.example", "www.gym.example"])),
)
def test_access_round_trip(
    t: datetime, client: str, method: str, path: str, code: int, agent: str, vhost: str | None
) -> None:
    t = t.replace(microsecond=0)
    escaped = agent.replace("\\", "\\\\").replace('"', '\\"')
    prefix = f"{vhost}:443 " if vhost else ""
    line = (
        f'{prefix}{client} - - [{t:%d/%b/%Y:%H:%M:%S} +0100] "{method} /{path}?a=1 HTTP/1.1"'
        f' {code} 12 "-" "{escaped}"'
    )
    r = AccessLogParser().parse(line)
    assert r is not None
    assert (r.vhost, r.client, r.method, r.path, r.query, r.status, r.user_agent) == (
        vhost,
        client,
        method,
        "/" + path,
        "a=1",
        code,
        agent,
    )
    assert r.time.replace(tzinfo=None) == t
