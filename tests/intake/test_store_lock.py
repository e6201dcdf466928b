"""SQLite writers of one process queue on one lock (store/db.py): form intake's writer is woken
when the lock is free instead of sleeping in SQLite's busy handler. Behaviour only."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from postwatch.store import Database
from postwatch.store.events import record_event
from postwatch.store.models import Event


def test_many_threads_writing_all_commit_and_an_error_releases_the_lock(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'pw.db'}")
    db.migrate()
    with pytest.raises(RuntimeError), db.session() as s:
        record_event(s, "x", account="a", data={})
        raise RuntimeError("rolled back, lock released")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(40):
                with db.session() as s:
                    record_event(s, "x", account="a", data={"n": n, "i": i})
                with db.session(readonly=True) as s:  # readers never take the lock
                    s.scalar(select(func.count()).select_from(Event))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    with db.session(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 6 * 40
    # a thread may nest a read-only session inside its write session
    with db.session() as s, db.session(readonly=True) as r:
        record_event(s, "y", account="a", data={})
        r.scalar(select(func.count()).select_from(Event))
    db.dispose()
