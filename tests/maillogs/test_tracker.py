"""MessageTracker: per-message state, expiry, reuse of queue ids, bounded memory."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from postwatch.maillogs import (
    EximParser,
    MessageSummary,
    MessageTracker,
    RecipientOutcome,
    SyslogMailParser,
)
from postwatch.reasons import Reason

TZ = ZoneInfo("Europe/Berlin")
LOGS = Path(__file__).parent.parent / "fixtures" / "logs"

POSTFIX = (LOGS / "tracker_postfix.log").read_text()


def run(
    lines: str, parser: SyslogMailParser | EximParser, tracker: MessageTracker
) -> list[RecipientOutcome | MessageSummary]:
    out: list[RecipientOutcome | MessageSummary] = []
    for line in lines.splitlines():
        rec = parser.parse(line)
        if rec is not None:
            out.extend(tracker.feed(rec))
    out.extend(tracker.finish())
    return out


def test_postfix_expiry_takes_last_deferral_reason_and_ids_are_reused() -> None:
    out = run(POSTFIX, SyslogMailParser(year=2026, tz=TZ), MessageTracker())
    outcomes = [o for o in out if isinstance(o, RecipientOutcome)]
    summaries = [o for o in out if isinstance(o, MessageSummary)]
    assert [o.outcome for o in outcomes] == [
        "delivered",
        "deferred",
        "deferred",
        "expired",
        "delivered",
    ]
    expired = outcomes[3]
    assert expired.recipient == "info@gym.example" and expired.verdict is not None
    assert expired.verdict.reason is Reason.MAILBOX_FULL and expired.verdict.permanent
    assert "status=expired" in expired.evidence
    assert [s.closed for s in summaries] == ["removed", "reused", "end_of_logs"]
    first, second, third = summaries
    assert first.sender == "form@site.example" and first.expired
    assert {a: s.final for a, s in first.recipients.items()} == {
        "v@gmail.com": "delivered",
        "info@gym.example": "expired",
    }
    assert first.recipients["info@gym.example"].attempts == 2
    assert second.sender == "other@x.example" and second.first_seen > first.last_seen
    assert third.sender == "third@x.example" and third.recipients == {}
    assert len({s.key for s in summaries}) == 3


EXIM = (LOGS / "tracker_exim.log").read_text()


def test_exim_retry_timeout_is_expired_with_last_deferral_reason() -> None:
    out = run(EXIM, EximParser(tz=TZ), MessageTracker())
    outcomes = [o for o in out if isinstance(o, RecipientOutcome)]
    assert [o.outcome for o in outcomes] == ["delivered", "deferred", "expired"]
    assert outcomes[2].verdict is not None
    assert outcomes[2].verdict.reason is Reason.MAILBOX_FULL and outcomes[2].verdict.permanent
    (summary,) = [o for o in out if isinstance(o, MessageSummary)]
    assert summary.closed == "removed" and summary.sender == "form@site.example"
    assert {a: s.final for a, s in summary.recipients.items()} == {
        "info@gym.example": "expired",
        "v@gmail.com": "delivered",
    }


def test_rejection_is_an_outcome_without_queue_id() -> None:
    line = (
        "Oct 21 09:14:03 mx postfix/smtpd[12]: NOQUEUE: reject: RCPT from unknown[127.0.0.1]: "
        "552 5.2.2 <info@gym.test>: Recipient address rejected: Mailbox is full; "
        "from=<a@b.example> to=<info@gym.test> proto=ESMTP helo=<localhost>"
    )
    (o,) = run(line, SyslogMailParser(year=2026, tz=TZ), MessageTracker())
    assert isinstance(o, RecipientOutcome) and o.outcome == "rejected" and o.queue_id is None
    assert o.recipient == "info@gym.test" and o.sender == "a@b.example"


def test_memory_is_bounded() -> None:
    tracker = MessageTracker(max_open=100, sweep_every=10, max_lifetime=timedelta(days=5))
    parser = SyslogMailParser(year=2026, tz=TZ)
    evicted = 0
    for i in range(5000):
        rec = parser.parse(
            f"Oct 21 09:00:00 mx postfix/qmgr[9]: {i:08X}: from=<a@b.example>, "
            "size=1, nrcpt=1 (queue active)"
        )
        assert rec is not None
        evicted += sum(isinstance(o, MessageSummary) for o in tracker.feed(rec))
        assert tracker.open_count <= 111
    assert evicted + tracker.open_count == 5000
    # and open ids older than the lifetime are swept
    rec = parser.parse("Oct 30 09:00:00 mx postfix/qmgr[9]: FFFFFFFF: removed")
    assert rec is not None
    for _ in range(10):
        tracker.feed(rec)
    assert tracker.open_count == 0


def _arrival(parser: SyslogMailParser, i: int) -> object:
    rec = parser.parse(
        f"Oct 21 09:00:00 mx postfix/qmgr[9]: {i:010X}: from=<a@b.example>, "
        "size=1, nrcpt=1 (queue active)"
    )
    assert rec is not None
    return rec


def test_a_flood_of_unique_queue_ids_costs_the_same_per_line_when_full() -> None:
    """Issue 11: past ``max_open`` every line swept all open messages (O(open) per line).

    Eviction is O(1), oldest first: filling the tracker and then flooding it with as many
    more unique ids cost about the same (a generous ratio, not a timing)."""
    n = 20_000
    tracker = MessageTracker(max_open=n)
    parser = SyslogMailParser(year=2026, tz=TZ)
    fill = [_arrival(parser, i) for i in range(n)]
    flood = [_arrival(parser, n + i) for i in range(n)]
    start = time.perf_counter()
    for rec in fill:
        tracker.feed(rec)  # type: ignore[arg-type]
    filling = time.perf_counter() - start
    evicted: list[str] = []
    start = time.perf_counter()
    for rec in flood:
        for out in tracker.feed(rec):  # type: ignore[arg-type]
            assert isinstance(out, MessageSummary) and out.closed == "evicted"
            evicted.append(out.queue_id)
    flooding = time.perf_counter() - start
    assert tracker.open_count == n
    assert evicted == [f"{i:010X}" for i in range(n)]  # oldest first
    assert tracker.evicted == n
    assert flooding < 5 * filling + 0.5, (filling, flooding)
