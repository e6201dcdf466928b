"""Issue 9 item 3: one event follower in the store, used by alerts and capacity.

Capacity makes exactly one ``quota_full`` per crossing across a restart and with two processes
on one store (PostgreSQL and SQLite); the follower hands each event to exactly one process.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from sqlalchemy import select

from postwatch.capacity import conditions
from postwatch.capacity.service import CapacityService
from postwatch.config import Config
from postwatch.observations import delivery_succeeded, mailbox_full_seen
from postwatch.store import Database
from postwatch.store.events import fetch_events, record_event
from postwatch.store.follower import EventCursor, EventFollower, from_end
from postwatch.store.models import Event
from tests.capacity.helpers import capacity_config

BOX = "info@gym.example"


def crossing(db: Database, cfg: Config) -> None:
    """One crossing: the mailbox refuses mail (a mailbox_full episode opens)."""
    with db.session() as s:
        mailbox_full_seen(s, account="gym", mailbox=BOX, data={"reason": "mailbox_full"})


def back_to_normal(db: Database, cfg: Config) -> None:
    """The mailbox takes mail again and a reading says 10 %: the next crossing is new."""
    with db.session() as s:
        delivery_succeeded(s, account="gym", mailbox=BOX, data={"evidence": "status=sent"})
        conditions.apply(
            s, subject="mailbox", name=BOX, account="gym", percent=10.0, used_bytes=10,
            limit_bytes=100, levels=cfg.capacity.levels, ok_margin=cfg.capacity.ok_margin,
        )


def quota_full_count(db: Database) -> int:
    with db.session(readonly=True) as s:
        return len(fetch_events(s, kinds=["quota_full"]))


def test_a_restart_misses_no_crossing(db: Database, tmp_path: Path) -> None:
    cfg = capacity_config(tmp_path)
    first = CapacityService(cfg, db)
    first.follow_events()  # the first start: follows from the newest event
    crossing(db, cfg)
    # the process stops before it saw the event; a new one starts
    second = CapacityService(cfg, db)
    second.follow_events()
    second.follow_events()
    assert quota_full_count(db) == 1
    back_to_normal(db, cfg)
    crossing(db, cfg)
    third = CapacityService(cfg, db)  # restarted again, after the crossing
    third.follow_events()
    first.follow_events()  # the old one, still around, repeats nothing
    assert quota_full_count(db) == 2


def _follow_for(url: str, cfg: Config, seconds: float) -> None:
    db = Database(url)
    svc = CapacityService(cfg, db)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        svc.follow_events()
        time.sleep(0.02)
    db.dispose()


def test_two_processes_make_one_quota_full_per_crossing(db: Database, tmp_path: Path) -> None:
    cfg = capacity_config(tmp_path)
    CapacityService(cfg, db).follow_events()  # the cursor starts here, for both
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_follow_for, args=(db.url, cfg, 8.0)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        for n in range(1, 4):
            crossing(db, cfg)
            for _ in range(200):
                if quota_full_count(db) >= n:
                    break
                time.sleep(0.05)
            time.sleep(0.3)  # both processes had time to see it
            assert quota_full_count(db) == n
            back_to_normal(db, cfg)
    finally:
        for p in procs:
            p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    assert quota_full_count(db) == 3


def _mark_each(url: str, seconds: float) -> None:
    db = Database(url)
    follower = EventFollower(db, "marker", kinds=("ping",), batch=7, scan=20)

    def mark(s: object, ev: Event) -> None:
        record_event(s, "pong", account=None, data={"ping": ev.id})  # type: ignore[arg-type]

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        follower.step(mark)
        time.sleep(0.01)
    db.dispose()


def test_the_follower_hands_each_event_to_exactly_one_process(db: Database) -> None:
    with db.session() as s:
        s.add(EventCursor(name="marker", last_id=0))
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_mark_each, args=(db.url, 6.0)) for _ in range(2)]
    for p in procs:
        p.start()
    for _ in range(10):
        with db.session() as s:
            for _ in range(15):
                record_event(s, "ping", account=None, data={})
        time.sleep(0.1)
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    with db.session(readonly=True) as s:
        pings = set(s.scalars(select(Event.id).where(Event.kind == "ping")))
        pongs = [int(e.data["ping"]) for e in fetch_events(s, kinds=["pong"], limit=None)]
    assert len(pings) == 150
    assert sorted(pongs) == sorted(pings)  # each once, none missed


def test_a_handler_that_raises_is_passed_over_in_its_savepoint(db: Database) -> None:
    follower = EventFollower(db, "picky", kinds=("ping",), start=from_end)
    follower.step(lambda s, ev: None)  # the cursor starts here

    def handle(s: object, ev: Event) -> None:
        record_event(s, "pong", account=None, data={"ping": ev.id})  # type: ignore[arg-type]
        if ev.data.get("bad"):
            raise ValueError("cannot read this one")

    with db.session() as s:
        for bad in (False, True, False):
            record_event(s, "ping", account=None, data={"bad": bad})
    assert follower.step(handle) == 3
    with db.session(readonly=True) as s:
        pongs = fetch_events(s, kinds=["pong"])
    assert len(pongs) == 2  # the bad one's write was undone, the one behind it ran
    follower.step(handle)  # passes the pongs; handles no ping again
    with db.session(readonly=True) as s:
        assert len(fetch_events(s, kinds=["pong"])) == 2
