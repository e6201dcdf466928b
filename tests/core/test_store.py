from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from postwatch.config import Config
from postwatch.intake.submissions import NewSubmission, store_submission
from postwatch.store import Database
from postwatch.store.events import event_dict, fetch_events, record_event
from postwatch.store.models import DeliveryJob, Submission


def test_events_round_trip_with_aware_times(db: Database) -> None:
    t0 = datetime(2026, 11, 1, 9, 14, 3, tzinfo=UTC)
    with db.session() as s:
        record_event(
            s,
            "mailbox_full",
            account="gym",
            mailbox="Info@Gym.example",
            at=t0,
            data={"reason": "mailbox_full"},
        )
        record_event(s, "quota_warning", account="gym", data={"percent": 95})
    with db.session(readonly=True) as s:
        rows = fetch_events(s, kinds=["mailbox_full"])
        assert len(rows) == 1
        d = event_dict(rows[0])
    assert d["mailbox"] == "info@gym.example"
    assert datetime.fromisoformat(d["at"]) == t0
    with db.session(readonly=True) as s:
        assert len(fetch_events(s, since=t0 + timedelta(seconds=1))) == 1


def test_submission_and_outbox_commit_together(db: Database, config: Config) -> None:
    acc = config.accounts[0]
    form = acc.forms[0]
    new = NewSubmission(
        acc, form, {"name": "Ada", "email": "Ada@Example.org"}, idempotency_key="k1"
    )
    first = store_submission(db, config, new)
    again = store_submission(db, config, new)
    assert first.created and not again.created and first.id == again.id
    with db.session(readonly=True) as s:
        sub = s.get(Submission, first.id)
        assert sub is not None and sub.email == "ada@example.org"
        jobs = s.scalars(select(DeliveryJob).where(DeliveryJob.submission_id == first.id)).all()
        assert [j.recipient for j in jobs] == ["info@gym.example"]
        assert jobs[0].message_id.startswith(f"<{first.id}.")
        assert len(fetch_events(s, kinds=["submission_stored"])) == 1


def test_migrate_is_idempotent(db: Database) -> None:
    db.migrate()
    db.migrate()


def test_concurrent_migrations_on_a_fresh_database(db_url: str) -> None:
    """Several postwatch processes starting together must not race on the schema."""
    from concurrent.futures import ThreadPoolExecutor

    def go(_: int) -> None:
        d = Database(db_url)
        try:
            d.migrate()
        finally:
            d.dispose()

    with ThreadPoolExecutor(4) as ex:
        list(ex.map(go, range(4)))
    d = Database(db_url)
    with d.session(readonly=True) as s:
        assert fetch_events(s) == []
    d.dispose()
