"""Postfix (and Dovecot) lines in syslog-shaped logs: classic and RFC 3339 timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from postwatch.maillogs import (
    DeliveryStatus,
    RecordKind,
    SyslogMailParser,
    parse_line,
)
from postwatch.reasons import Reason

BERLIN = ZoneInfo("Europe/Berlin")


def parser() -> SyslogMailParser:
    return SyslogMailParser(year=2026, tz=BERLIN)


def test_delivery_bounced_mailbox_full_lmtp() -> None:
    line = (
        "Oct 21 09:14:03 mx postfix/lmtp[1234]: 4AbCdE1234: to=<info@gym.test>, "
        "orig_to=<info@gym.example>, relay=mx[private/dovecot-lmtp], delay=0.1, "
        "delays=0.01/0/0/0.09, dsn=5.2.2, status=bounced (host mx[private/dovecot-lmtp] said: "
        "552 5.2.2 <info@gym.test> Quota exceeded (mailbox for user is full) (in reply to end "
        "of DATA command))"
    )
    r = parser().parse(line)
    assert r is not None
    assert r.kind is RecordKind.DELIVERY and r.mta == "postfix" and r.program == "postfix/lmtp"
    assert r.time == datetime(2026, 10, 21, 9, 14, 3, tzinfo=BERLIN)
    assert r.time.utcoffset() == timedelta(hours=2)
    assert (r.queue_id, r.recipient, r.orig_to) == (
        "4AbCdE1234",
        "info@gym.test",
        "info@gym.example",
    )
    assert r.relay == "mx[private/dovecot-lmtp]"
    assert (r.dsn, r.status, r.delivery) == ("5.2.2", "bounced", DeliveryStatus.BOUNCED)
    assert r.reply is not None and r.reply.endswith("(in reply to end of DATA command)")
    assert r.verdict is not None and r.verdict.reason is Reason.MAILBOX_FULL
    assert r.verdict.permanent and r.verdict.code == 552
    assert r.raw == line
    assert r.envelope_recipient == "info@gym.example"


def test_traps_unbracketed_ipv6_hyphen_status_long_queue_id() -> None:
    p = parser()
    r = p.parse(
        "Oct  3 09:14:03 mx postfix/smtp[77]: 4XYZbcdfGHzK7Lm: to=user@host.example, "
        "relay=mx.host.example[2001:db8::25]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, "
        "status=sent (250 2.0.0 Ok: queued as 123)"
    )
    assert r is not None and r.queue_id == "4XYZbcdfGHzK7Lm"
    assert r.recipient == "user@host.example" and r.relay == "mx.host.example[2001:db8::25]:25"
    assert r.time.day == 3 and r.delivery is DeliveryStatus.SENT and r.verdict is None
    r = p.parse(
        "Oct  3 09:14:04 mx postfix/smtpd[78]: 1A2B3C4D5E: to=<a@b.example>, relay=none, "
        "delay=0, delays=0/0/0/0, dsn=5.1.1, status=undeliverable-but-not-cached (unknown user)"
    )
    assert r is not None and r.status == "undeliverable-but-not-cached" and r.delivery is None
    r = p.parse(
        "Oct  3 09:14:05 mx postfix/smtp[79]: ABCDEF1: to=<a@b.example>, relay=none, delay=30, "
        "delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to b.example[192.0.2.1]:25: "
        "Connection timed out)"
    )
    assert r is not None and r.verdict is not None
    assert r.verdict.reason is Reason.NETWORK and not r.verdict.permanent


def test_multiline_reply_flattened() -> None:
    r = parser().parse(
        "Oct 21 09:14:03 mx postfix/smtp[1]: 4F1A2B3C4D: to=<x@gmail.com>, "
        "relay=gmail-smtp-in.l.google.com[142.250.1.27]:25, delay=1, delays=0/0/0.5/0.5, "
        "dsn=5.2.2, status=bounced (host gmail-smtp-in.l.google.com[142.250.1.27] said: "
        "552-5.2.2 The email account that you tried to reach is over quota. 552 5.2.2 "
        "https://support.google.com/mail/?p=OverQuotaPerm - gsmtp (in reply to RCPT TO command))"
    )
    assert r is not None and r.verdict is not None
    assert r.verdict.reason is Reason.MAILBOX_FULL and r.verdict.code == 552


def test_rfc3339_timestamps() -> None:
    r = parser().parse(
        "2026-10-21T09:14:03.123456+02:00 mx postfix/qmgr[900]: 3F2A1B: "
        "from=<form@site.example>, size=1234, nrcpt=2 (queue active)"
    )
    assert r is not None and r.kind is RecordKind.ARRIVAL and r.sender == "form@site.example"
    assert r.time == datetime(2026, 10, 21, 7, 14, 3, 123456, tzinfo=UTC)


def test_qmgr_expired_removed_bounce_notification_noqueue() -> None:
    p = parser()
    r = p.parse(
        "Oct 21 09:14:03 mx postfix/qmgr[900]: 3F2A1B: from=<form@site.example>, "
        "status=expired, returned to sender"
    )
    assert r is not None and r.kind is RecordKind.EXPIRED and r.sender == "form@site.example"
    r = p.parse("Oct 21 09:14:03 mx postfix/qmgr[900]: 3F2A1B: removed")
    assert r is not None and r.kind is RecordKind.REMOVED and r.queue_id == "3F2A1B"
    r = p.parse(
        "Oct 21 09:14:03 mx postfix/bounce[901]: 3F2A1B: sender non-delivery notification: 4C5D6E"
    )
    assert r is not None and r.kind is RecordKind.NOTIFICATION and r.related_id == "4C5D6E"
    r = p.parse(
        "Oct 21 09:14:03 mx postfix/smtpd[12]: NOQUEUE: reject: RCPT from unknown[127.0.0.1]: "
        "552 5.2.2 <info@gym.test>: Recipient address rejected: Mailbox is full; "
        "from=<a@b.example> to=<info@gym.test> proto=ESMTP helo=<localhost>"
    )
    assert r is not None and r.kind is RecordKind.REJECT and r.queue_id is None
    assert (r.sender, r.recipient) == ("a@b.example", "info@gym.test")
    assert r.verdict is not None and r.verdict.reason is Reason.MAILBOX_FULL


def test_null_sender_non_delivery_notification() -> None:
    r = parser().parse(
        "Oct 21 09:14:04 mx postfix/qmgr[900]: 4C5D6E: from=<>, size=3000, nrcpt=1 (queue active)"
    )
    assert r is not None and r.sender == ""


@pytest.mark.parametrize(
    "line",
    [
        "Oct 21 09:14:03 mx CRON[55]: (root) CMD (run-parts /etc/cron.hourly)",
        "Oct 21 09:14:03 mx postfix/smtpd[12]: connect from unknown[192.0.2.7]",
        "Oct 21 09:14:03 mx postfix/smtpd[12]: 1A2B3C: client=unknown[192.0.2.7]",
        "Oct 21 09:14:03 mx postfix/anvil[3]: statistics: max connection rate 1/60s",
    ],
)
def test_other_lines_are_ignored_not_unparsed(line: str) -> None:
    p = parser()
    assert p.parse(line) is None
    assert (p.lines, p.ignored, p.unparsed) == (1, 1, 0)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "garbage",
        "\x00\xff",
        "Oct 21 09:14",
        "Foo 21 09:14:03 mx postfix/qmgr[1]: A: removed",
        "Oct 21 09:14:03 mx postfix/smtp[1]: 4F1A2B3C4D: to=<x@gmail.com>, rel",
    ],
)
def test_garbage_and_truncated_lines_are_counted(line: str) -> None:
    p = parser()
    assert p.parse(line) is None
    assert p.unparsed == 1


def test_year_rollover_and_dst_fold() -> None:
    p = SyslogMailParser(year=2025, tz=BERLIN)
    a = p.parse("Dec 31 23:59:59 mx postfix/qmgr[1]: ABCDEF: removed")
    b = p.parse("Jan  1 00:00:01 mx postfix/qmgr[1]: ABCDE0: removed")
    assert a is not None and b is not None
    assert a.time.year == 2025 and b.time.year == 2026 and b.time > a.time
    # Europe/Berlin leaves summer time on 2026-10-25: 02:00-03:00 happens twice
    p = SyslogMailParser(year=2026, tz=BERLIN)
    times = []
    for stamp in (
        "Oct 25 02:30:00",
        "Oct 25 02:59:59",
        "Oct 25 02:00:01",
        "Oct 25 02:30:00",
        "Oct 25 03:00:00",
    ):
        r = p.parse(f"{stamp} mx postfix/qmgr[1]: ABCDEF: removed")
        assert r is not None
        times.append(r.time.astimezone(UTC))
    assert times == sorted(times)
    assert times[3] - times[0] == timedelta(hours=1)


def test_dovecot_quota_line_in_mail_log() -> None:
    r = parser().parse(
        "Oct 21 09:14:03 mx dovecot: lmtp(info@gym.test)<123><abc>: Info: msgid=<x@y>: "
        "save failed to INBOX: Quota exceeded (mailbox for user is full)"
    )
    assert r is not None and r.kind is RecordKind.QUOTA and r.mta == "dovecot"
    assert r.recipient == "info@gym.test" and r.message_id == "x@y"
    assert r.verdict is not None and r.verdict.reason is Reason.MAILBOX_FULL


def test_parse_line_function_and_priority_prefix() -> None:
    r = parse_line("<22>Oct 21 09:14:03 mx postfix/qmgr[1]: ABCDEF: removed", year=2026, tz=BERLIN)
    assert r is not None and r.kind is RecordKind.REMOVED
    assert parse_line("nonsense") is None
