from __future__ import annotations

from postwatch.observations import delivery_succeeded, mailbox_full_seen, open_episode
from postwatch.store import Database
from postwatch.store.events import fetch_events


def test_one_mailbox_full_per_episode_and_one_recovery(db: Database) -> None:
    box = "info@gym.example"
    with db.session() as s:
        assert delivery_succeeded(s, account="gym", mailbox=box, data={}) is None
        assert mailbox_full_seen(s, account="gym", mailbox=box, data={"n": 1}) is not None
    for _ in range(5):
        with db.session() as s:
            assert mailbox_full_seen(s, account="gym", mailbox=box, data={}) is None
    with db.session() as s:
        assert open_episode(s, "INFO@gym.example") is not None
        rec = delivery_succeeded(s, account="gym", mailbox=box, data={"evidence": "x"})
        assert rec is not None and rec.data["evidence"] == "x"
    with db.session() as s:
        assert delivery_succeeded(s, account="gym", mailbox=box, data={}) is None
        kinds = [e.kind for e in fetch_events(s)]
    assert kinds == ["mailbox_full", "mailbox_recovered"]
