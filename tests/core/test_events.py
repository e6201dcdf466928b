"""EventKind: a StrEnum, stored and queried as its plain text on both stores."""

from __future__ import annotations

from postwatch.store import Database
from postwatch.store.events import EventKind, event_dict, fetch_events, record_event


def test_event_kind_is_stored_as_plain_text(db: Database) -> None:
    with db.session() as s:
        record_event(s, EventKind.MAILBOX_FULL, account="gym", mailbox="Info@Gym.example")
        record_event(s, "quota_full", account="gym")  # a str of a kind still works
    with db.session(readonly=True) as s:
        rows = fetch_events(s, kinds=[EventKind.MAILBOX_FULL])
        assert [event_dict(e)["kind"] for e in rows] == ["mailbox_full"]
        assert type(rows[0].kind) is str
        assert [e.kind for e in fetch_events(s, kinds=["quota_full"])] == [EventKind.QUOTA_FULL]
