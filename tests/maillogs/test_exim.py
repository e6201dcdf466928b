"""Exim main.log lines (formats from the Exim specification, chapter "Log files")."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from postwatch.maillogs import DeliveryStatus, EximParser, RecordKind, SyslogMailParser
from postwatch.reasons import Reason

BERLIN = ZoneInfo("Europe/Berlin")


def p() -> EximParser:
    return EximParser(tz=BERLIN)


def test_arrival_with_recipients_old_and_new_ids() -> None:
    r = p().parse(
        "2026-10-21 09:14:03 1t5Xyz-0001AB-Cd <= form@site.example H=localhost "
        "[127.0.0.1] P=esmtp S=1234 id=abc@x for info@gym.example v@gmail.com"
    )
    assert r is not None and r.kind is RecordKind.ARRIVAL and r.queue_id == "1t5Xyz-0001AB-Cd"
    assert r.sender == "form@site.example" and r.recipients == ("info@gym.example", "v@gmail.com")
    assert r.time == datetime(2026, 10, 21, 9, 14, 3, tzinfo=BERLIN)
    r = p().parse(
        "2026-10-21 09:14:03 1t5Xyz-000000001AB-CdEf <= <> R=1t5Xyz-0001AB-Cd "
        "U=mailnull P=local S=1333"
    )
    assert r is not None and r.queue_id == "1t5Xyz-000000001AB-CdEf" and r.sender == ""


def test_offset_and_pid_and_millisec() -> None:
    r = p().parse(
        "2026-10-21 09:14:03.123 +0000 [4567] 1t5Xyz-0001AB-Cd == info@gym.example "
        "R=virtual_user T=virtual_delivery defer (-22): mailbox is full "
        "(MTA-imposed quota exceeded while writing to /home/acct/mail)"
    )
    assert r is not None and r.delivery is DeliveryStatus.DEFERRED
    assert r.time.utcoffset() == timedelta(0) and r.time.microsecond == 123000
    assert r.verdict is not None and r.verdict.reason is Reason.MAILBOX_FULL
    assert not r.verdict.permanent


def test_delivery_kinds() -> None:
    e = p()
    r = e.parse(
        "2026-10-21 09:14:03 1t5Xyz-0001AB-Cd => info <info@gym.example> R=local_user "
        "T=local_delivery"
    )
    assert r is not None and r.delivery is DeliveryStatus.SENT
    assert (r.recipient, r.orig_to) == ("info", "info@gym.example")
    r = e.parse(
        "2026-10-21 09:14:03 1t5Xyz-0001AB-Cd -> v@gmail.com R=dnslookup T=remote_smtp "
        'H=gmail-smtp-in.l.google.com [142.250.1.1] C="250 2.0.0 OK - gsmtp"'
    )
    assert r is not None and r.delivery is DeliveryStatus.SENT and r.reply == "250 2.0.0 OK - gsmtp"
    assert r.relay == "gmail-smtp-in.l.google.com [142.250.1.1]"
    r = e.parse(
        "2026-10-21 09:14:03 1t5Xyz-0001AB-Cd ** x@yahoo.com R=dnslookup T=remote_smtp "
        "H=mta.yahoo.com [98.136.96.1]: SMTP error from remote mail server after RCPT "
        "TO:<x@yahoo.com>: 554 delivery error: dd This user doesn't have a yahoo.com "
        "account"
    )
    assert r is not None and r.delivery is DeliveryStatus.BOUNCED
    assert r.verdict is not None and r.verdict.reason is Reason.USER_UNKNOWN
    r = e.parse("2026-10-21 09:14:03 1t5Xyz-0001AB-Cd ** info@gym.example: retry timeout exceeded")
    assert r is not None and r.delivery is DeliveryStatus.EXPIRED and r.verdict is not None
    assert r.verdict.permanent
    r = e.parse("2026-10-21 09:14:03 1t5Xyz-0001AB-Cd Completed")
    assert r is not None and r.kind is RecordKind.REMOVED


def test_rejection_without_id() -> None:
    r = p().parse(
        "2026-10-21 09:14:03 H=(helo) [192.0.2.9] F=<a@b.example> rejected RCPT "
        "<info@gym.example>: mailbox is full"
    )
    assert r is not None and r.kind is RecordKind.REJECT and r.queue_id is None
    assert (r.sender, r.recipient) == ("a@b.example", "info@gym.example")
    assert r.verdict is not None and r.verdict.reason is Reason.MAILBOX_FULL


def test_exim_through_syslog() -> None:
    r = SyslogMailParser(year=2026, tz=BERLIN).parse(
        "Oct 21 09:14:03 host exim[123]: 1t5Xyz-0001AB-Cd Completed"
    )
    assert r is not None and r.mta == "exim" and r.kind is RecordKind.REMOVED


@pytest.mark.parametrize("line", ["", "2026-10-21", "x" * 50, "2026-13-45 99:99:99 foo"])
def test_garbage_counted(line: str) -> None:
    e = p()
    assert e.parse(line) is None
    assert e.unparsed == 1


# Lines in the shape of the examples in the Exim specification ("Log files" chapter).
SPEC = """\
2002-10-31 08:57:53 16ZCW1-0005MB-00 <= kryten@dwarf.fict.example H=mailer.fict.example [192.168.123.123] U=exim P=smtp S=5678 id=incoming-id@mailer.fict.example
2002-10-31 08:58:00 16ZCW1-0005MB-00 => marv@hitch.fict.example R=dnslookup T=remote_smtp H=hitch.fict.example [192.168.234.234]
2002-10-31 08:58:00 16ZCW1-0005MB-00 Completed
2002-10-31 09:00:10 16ZCW1-0005MD-00 == monk@holistic.fict.example R=dnslookup T=remote_smtp defer (-53): retry time not reached
2002-10-31 09:00:12 16ZCW1-0005MF-00 ** jim@trek99.example R=dnslookup T=remote_smtp: SMTP error from remote mail server after RCPT TO:<jim@trek99.example>: host lacon.trek99.example [192.168.239.239]: 550 Unknown user
"""  # noqa: E501


def test_exim_specification_examples() -> None:
    e = EximParser(tz=BERLIN)
    recs = [e.parse(line) for line in SPEC.splitlines()]
    assert all(r is not None for r in recs)
    kinds = [(r.kind.value, r.status) for r in recs if r is not None]
    assert kinds == [
        ("arrival", None),
        ("delivery", "sent"),
        ("removed", None),
        ("delivery", "deferred"),
        ("delivery", "bounced"),
    ]
    last = recs[-1]
    assert last is not None and last.verdict is not None
    assert last.verdict.reason is Reason.USER_UNKNOWN and last.verdict.code == 550
    assert last.relay == "lacon.trek99.example [192.168.239.239]"
