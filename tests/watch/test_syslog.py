"""The syslog listener: RFC 5424 and RFC 3164 over UDP and TCP, RFC 6587 framing."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from postwatch.watch.syslog import FrameDecoder, SyslogListener, SyslogMessage, parse_syslog

NOW = datetime(2026, 11, 29, 18, 0, 0, tzinfo=UTC)
BOUNCE = (
    "3F2A1C0D1E: to=<info@gym.example>, relay=mail.gym.example[192.0.2.7]:25, delay=0.3, "
    "delays=0.01/0/0.1/0.2, dsn=5.2.2, status=bounced (host mail.gym.example[192.0.2.7] said: "
    "552 5.2.2 <info@gym.example>: Mailbox full (in reply to RCPT TO command))"
)


def test_rfc5424_with_structured_data() -> None:
    raw = (
        "<22>1 2026-11-29T18:01:02.345+01:00 mx1.hoster.example postfix/smtp 4242 - "
        '[meta sequenceId="1" note="a \\"]\\" here"] ' + BOUNCE
    )
    m = parse_syslog(raw, now=NOW)
    assert m is not None
    assert (m.facility, m.severity, m.protocol) == (2, 6, "rfc5424")
    assert m.hostname == "mx1.hoster.example" and m.app == "postfix/smtp" and m.procid == "4242"
    assert m.msg == BOUNCE
    assert m.time == datetime(2026, 11, 29, 17, 1, 2, 345000, tzinfo=UTC)
    assert (
        m.to_line()
        == f"2026-11-29T18:01:02.345000+01:00 mx1.hoster.example postfix/smtp[4242]: {BOUNCE}"
    )


def test_rfc5424_nil_values_and_bom() -> None:
    m = parse_syslog("<14>1 - - app - - - \ufeffhello", now=NOW)
    assert m is not None and m.msg == "hello" and m.hostname == "" and m.time == NOW


def test_rfc3164_classic() -> None:
    m = parse_syslog(f"<22>Nov  9 08:07:06 mx1 postfix/smtp[4242]: {BOUNCE}", now=NOW)
    assert m is not None and m.protocol == "rfc3164"
    assert m.time == datetime(2026, 11, 9, 8, 7, 6, tzinfo=UTC)
    assert (m.hostname, m.app, m.procid, m.msg) == ("mx1", "postfix/smtp", "4242", BOUNCE)


def test_rfc3164_without_hostname_and_year_boundary() -> None:
    jan = datetime(2027, 1, 1, 0, 0, 5, tzinfo=UTC)
    m = parse_syslog("<22>Dec 31 23:59:59 postfix/qmgr[9]: ABC: removed", now=jan)
    assert m is not None and m.time.year == 2026 and m.app == "postfix/qmgr" and m.hostname == ""


def test_rsyslog_forward_format() -> None:
    m = parse_syslog("<22>2026-11-29T18:01:02+00:00 mx1 postfix/qmgr[9]: ABC: removed", now=NOW)
    assert m is not None and m.hostname == "mx1" and m.msg == "ABC: removed"


def test_not_syslog() -> None:
    assert parse_syslog("hello", now=NOW) is None
    assert parse_syslog("<999>1 - - - - - - x", now=NOW) is None


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_parse_never_raises(data: str | bytes) -> None:
    parse_syslog(data, now=NOW)
    parse_syslog(b"<13>1 " + (data.encode() if isinstance(data, str) else data), now=NOW)
    parse_syslog(b"<13>Nov  1 00:00:00 " + (data.encode() if isinstance(data, str) else data))


_msg = st.binary(min_size=1, max_size=300).filter(lambda b: b"\n" not in b)


@settings(max_examples=200, deadline=None)
@given(
    msgs=st.lists(_msg.map(lambda b: b"<13>" + b), min_size=1, max_size=10),
    counted=st.lists(st.booleans(), min_size=10, max_size=10),
    cuts=st.lists(st.integers(min_value=1, max_value=50), max_size=20),
)
def test_framing_round_trip(msgs: list[bytes], counted: list[bool], cuts: list[int]) -> None:
    """Octet-counted and newline frames, mixed and cut anywhere, decode to the same messages."""
    stream = b"".join(
        (b"%d %s" % (len(m), m)) if counted[i] else m + b"\n" for i, m in enumerate(msgs)
    )
    dec = FrameDecoder()
    out: list[bytes] = []
    pos = 0
    for c in cuts:
        out.extend(dec.feed(stream[pos : pos + c]))
        pos += c
    out.extend(dec.feed(stream[pos:]))
    out.extend(dec.flush())
    assert out == msgs


def test_framing_garbage_does_not_stop_decoding() -> None:
    dec = FrameDecoder(max_message=100)
    out = dec.feed(b"12345678901234567890\n<13>ok\n99999 x\n")
    assert out == [b"<13>ok"]
    assert dec.dropped >= 1


async def test_listener_udp_and_tcp() -> None:
    got: list[tuple[SyslogMessage, str]] = []
    lst = SyslogListener("127.0.0.1:0", lambda m, p: got.append((m, p)))
    await lst.start()
    try:
        assert lst.udp_port and lst.tcp_port
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.sendto(
            f"<22>Nov  9 08:07:06 mx1 postfix/smtp[1]: {BOUNCE}".encode(),
            ("127.0.0.1", lst.udp_port),
        )
        udp.close()
        _reader, writer = await asyncio.open_connection("127.0.0.1", lst.tcp_port)
        m1 = b"<22>1 2026-11-29T18:01:02Z mx2 postfix/lmtp 7 - - first"
        m2 = b"<22>Nov  9 08:07:06 mx2 postfix/lmtp[7]: second"
        writer.write(b"%d %s" % (len(m1), m1) + m2 + b"\n" + b"garbage without pri\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        for _ in range(100):
            if len(got) >= 3:
                break
            await asyncio.sleep(0.02)
    finally:
        await lst.close()
    msgs = sorted(m.msg for m, _ in got)
    assert msgs == sorted([BOUNCE, "first", "second"])
    assert all(p == "127.0.0.1" for _, p in got)
    assert lst.unparsed == 1
