"""Lines -> observations -> events, with the shared episode rule."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from postwatch.store import Database
from postwatch.store.events import fetch_events
from postwatch.watch.detect import LineProcessor, store_observations
from tests.watch import lines as L

WATCHED = {"info@gym.example": "gym"}


def kinds(db: Database) -> list[str]:
    with db.session(readonly=True) as s:
        return [e.kind for e in fetch_events(s)]


def test_episode_from_postfix_lines(db: Database) -> None:
    proc = LineProcessor(WATCHED, source="file:/var/log/mail.log", fmt="postfix")
    q1, q2, q3 = L.qid(), L.qid(), L.qid()
    obs = proc.feed(L.delivered(q1) + L.bounced_full(q2) + L.bounced_full(q3) + L.noise(20))
    assert [o.kind for o in obs] == ["delivered", "failed", "failed"]
    with db.session() as s:
        store_observations(s, obs)
    assert kinds(db) == ["mailbox_full", "delivery_failed", "delivery_failed"]
    with db.session(readonly=True) as s:
        full = fetch_events(s, kinds=["mailbox_full"])[0]
        failed = fetch_events(s, kinds=["delivery_failed"])[0]
    bounce_line = L.bounced_full(q2)[3]
    assert full.account == "gym" and full.mailbox == "info@gym.example"
    assert full.data["evidence"] == bounce_line
    assert failed.data["reason"] == "mailbox_full" and failed.data["permanent"] is True
    assert failed.data["status"] == "5.2.2" and failed.data["source"] == "file:/var/log/mail.log"
    assert failed.data["sender"] == "web@example.test" and failed.data["queue_id"] == q2
    with db.session() as s:
        store_observations(s, proc.feed(L.delivered(L.qid())))
    assert kinds(db)[-1] == "mailbox_recovered"
    with db.session(readonly=True) as s:
        rec = fetch_events(s, kinds=["mailbox_recovered"])[0]
    assert rec.data["failures"] == 2


def test_rcpt_time_reject_counts(db: Database) -> None:
    proc = LineProcessor(WATCHED, source="syslog:mx1", fmt="auto")
    obs = proc.feed(L.rcpt_reject())
    assert len(obs) == 1 and obs[0].data["outcome"] == "rejected"
    with db.session() as s:
        store_observations(s, obs)
    assert kinds(db) == ["mailbox_full", "delivery_failed"]


def test_unwatched_mailboxes_make_no_events() -> None:
    proc = LineProcessor(WATCHED, source="x", fmt="postfix")
    assert proc.feed(L.bounced_full(L.qid(), rcpt="anna@gym.example")) == []


def test_garbage_is_counted_not_fatal() -> None:
    proc = LineProcessor(WATCHED, source="x", fmt="postfix")
    assert proc.feed(["", "\x00\x01", "not a log line at all"]) == []
    assert proc.lines == 3 and proc.unparsed >= 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=300), max_size=20))
def test_processor_never_raises(lines: list[str]) -> None:
    proc = LineProcessor(WATCHED, source="x", fmt="auto")
    proc.feed(lines)
    proc.feed(L.bounced_full(L.qid()) + lines)


EXIM = [
    "2026-11-29 09:14:03 1vPzYQ-0004xY-2c <= web@example.test H=web1 [192.0.2.10] P=esmtp "
    "S=2412 id=sub-1@example.test for info@gym.example",
    "2026-11-29 09:14:03 1vPzYQ-0004xY-2c == info@gym.example R=virtual_user "
    "T=virtual_delivery defer (-22): mailbox is full",
    "2026-11-29 09:44:03 1vPzYR-0004xZ-3d <= web@example.test H=web1 [192.0.2.10] P=esmtp "
    "S=2412 for info@gym.example",
    "2026-11-29 09:44:04 1vPzYR-0004xZ-3d => info@gym.example R=virtual_user T=virtual_delivery",
    "2026-11-29 09:44:04 1vPzYR-0004xZ-3d Completed",
]


def test_exim_main_log(db: Database) -> None:
    proc = LineProcessor(WATCHED, source="file:/var/log/exim4/mainlog", fmt="auto")
    obs = proc.feed(EXIM)
    assert [(o.kind, o.data.get("reason")) for o in obs] == [
        ("failed", "mailbox_full"),
        ("delivered", None),
    ]
    assert obs[0].data["permanent"] is False and obs[0].data["outcome"] == "deferred"
    with db.session() as s:
        store_observations(s, obs)
    assert kinds(db) == ["mailbox_full", "delivery_failed", "mailbox_recovered"]


def test_dovecot_log_quota_failure_opens_an_episode(db: Database) -> None:
    proc = LineProcessor(WATCHED, source="file:dovecot.log", fmt="dovecot")
    line = (
        "Nov 29 18:23:18 lmtp(info@gym.example)<10403><qDvsNJZtDGujKAAAg+zDdQ>: Info: "
        "msgid=<20261129182318.D85EA20C39B@mail.pw.test>: save failed to INBOX: "
        "Quota exceeded (mailbox for user is full)"
    )
    obs = proc.feed([line, line])
    assert [o.kind for o in obs] == ["full", "full"]
    with db.session() as s:
        store_observations(s, obs)
    assert kinds(db) == ["mailbox_full"]
