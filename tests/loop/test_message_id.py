"""Message-IDs in the MTA logs: the parsers and tracker carry them to each recipient outcome;
the watch turns outcomes of postwatch's own mail (and only those) into downstream observations."""

from __future__ import annotations

from postwatch.maillogs import EximParser, MessageTracker, RecipientOutcome, SyslogMailParser
from postwatch.maillogs.records import RecordKind
from postwatch.watch.detect import LineProcessor

MID = "<0190f2aa11bb22cc33dd44ee55ff6677.0123456789ab@hoster.example>"
POSTFIX = [
    "Nov 29 19:00:00 mail postfix/smtpd[1]: 4ABC123: client=localhost[127.0.0.1]",
    f"Nov 29 19:00:00 mail postfix/cleanup[2]: 4ABC123: message-id={MID}",
    "Nov 29 19:00:00 mail postfix/qmgr[3]: 4ABC123: from=<postwatch@hoster.example>, size=900, "
    "nrcpt=1 (queue active)",
    "Nov 29 19:00:01 mail postfix/lmtp[4]: 4ABC123: to=<info@gym.example>, relay=mail[/run/lmtp],"
    " delay=0.1, delays=0/0/0/0.1, dsn=5.2.2, status=bounced (host mail[/run/lmtp] said: 552 "
    "5.2.2 <info@gym.example> Quota exceeded (mailbox for user is full) (in reply to end of DATA"
    " command))",
    "Nov 29 19:00:01 mail postfix/bounce[5]: 4ABC123: sender non-delivery notification: 5DEF456",
    "Nov 29 19:00:01 mail postfix/qmgr[3]: 4ABC123: removed",
]


def outcomes(parser: object, lines: list[str]) -> list[RecipientOutcome]:
    tracker = MessageTracker()
    out: list[RecipientOutcome] = []
    for line in lines:
        rec = parser.parse(line)  # type: ignore[attr-defined]
        if rec is not None:
            out.extend(o for o in tracker.feed(rec) if isinstance(o, RecipientOutcome))
    return out


def test_postfix_cleanup_message_id_line() -> None:
    r = SyslogMailParser(year=2026).parse(POSTFIX[1])
    assert r is not None and r.kind is RecordKind.MESSAGE_ID
    assert r.queue_id == "4ABC123" and r.message_id == MID
    bare = SyslogMailParser(year=2026).parse(POSTFIX[1].replace(MID, MID.strip("<>")))
    assert bare is not None and bare.message_id == MID


def test_postfix_outcome_carries_the_message_id() -> None:
    [o] = outcomes(SyslogMailParser(year=2026), POSTFIX)
    assert o.outcome == "bounced" and o.recipient == "info@gym.example"
    assert o.message_id == MID and o.queue_id == "4ABC123"
    # iter_records (the fast path of forensics) gives the same records
    p = SyslogMailParser(year=2026)
    assert [r.kind for r in p.iter_records(POSTFIX)][:2] == [
        RecordKind.MESSAGE_ID, RecordKind.ARRIVAL]


def test_exim_outcome_carries_the_message_id() -> None:
    lines = [
        "2026-10-21 09:14:03 1t5Xyz-0001AB-Cd <= postwatch@hoster.example H=localhost "
        f"[127.0.0.1] P=esmtp S=900 id={MID.strip('<>')}",
        "2026-10-21 09:14:04 1t5Xyz-0001AB-Cd ** info@gym.example R=virtual T=dovecot_lmtp: "
        "LMTP error after end of data: 552 5.2.2 <info@gym.example> Quota exceeded",
    ]
    [o] = outcomes(EximParser(), lines)
    assert o.outcome == "bounced" and (o.message_id or "").strip("<>") == MID.strip("<>")


def test_watch_makes_downstream_observations_for_own_mail_only() -> None:
    proc = LineProcessor({}, source="file:x", fmt="postfix", year=2026,
                         own_domain="hoster.example")
    [obs] = proc.feed(POSTFIX)
    assert obs.kind == "downstream" and obs.mailbox == "info@gym.example"
    assert obs.data["message_id"] == MID and obs.data["outcome"] == "bounced"
    assert obs.data["queue_id"] == "4ABC123" and obs.data["evidence"] == POSTFIX[3]
    assert obs.verdict is not None and obs.verdict.reason.value == "mailbox_full"
    # somebody else's mail (other domain, other shape): nothing, no store access needed
    foreign = [line.replace(MID, "<CAF+x=y@mail.gmail.com>") for line in POSTFIX]
    assert LineProcessor({}, source="f", fmt="postfix", year=2026,
                         own_domain="hoster.example").feed(foreign) == []
    # a watch without own_domain (e.g. forensics-style use) makes none either
    assert LineProcessor({}, source="f", fmt="postfix", year=2026).feed(POSTFIX) == []
    # a watched mailbox still gets its own observation beside the downstream one
    both = LineProcessor({"info@gym.example": "gym"}, source="f", fmt="postfix", year=2026,
                         own_domain="hoster.example").feed(POSTFIX)
    assert [o.kind for o in both] == ["failed", "downstream"]
