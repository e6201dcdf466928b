"""The one event follower: read the event log in id order from a persisted cursor, exactly once.

Every room that reacts to events (alerts, capacity) follows the log with an ``EventFollower``
of its own ``name``. The cursor (the last event id passed) lives in ``event_cursors``, so a
restart carries on where it stopped and several processes following under one name share it.

Guarantees:

- **exactly once per name**: a chunk of events is handled and the cursor moved in one write
  transaction that first locks the cursor row and checks it has not moved; a process that lost
  the race applies nothing and reads again;
- **no event skipped on PostgreSQL**: ids are handed out before commit, so an id may become
  visible after a higher one. A gap before a *recent* event (younger than ``recent`` by the
  wall clock, which is what producers stamp events with) stops the chunk there for up to
  ``hole_wait`` seconds; a gap that stays longer is an old rollback and is passed. SQLite
  serialises writers, so it has no such gaps;
- **a savepoint per event**: a handler that raises (anything but a store error) has its writes
  undone, is logged once and passed over; the events behind it still run. A store error
  (``SQLAlchemyError``) ends the chunk with nothing applied and the cursor unmoved;
- **short transactions**: at most ``batch`` events of the wanted ``kinds`` per write
  transaction out of at most ``scan`` new ids read (SQLite's write lock is shared with intake).

A new name starts where ``start`` says (``from_beginning``, ``from_end`` or a callable of the
session); the row is created once, whoever comes first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, String, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from postwatch.store.db import Database
from postwatch.store.events import last_event_id
from postwatch.store.models import Base, Event, utcnow

log = logging.getLogger("postwatch.store.follower")

#: a gap in event ids is waited for this long (PostgreSQL commits out of id order)...
HOLE_WAIT = 2.0
#: ...when the event after it is this recent (else the gap is an old rollback)
RECENT = timedelta(seconds=30)
#: chunks handled per ``step`` before it returns (the caller has other work too)
MAX_CHUNKS_PER_STEP = 50

Handler = Callable[[Session, Event], None]
Start = Callable[[Session], int]


class EventCursor(Base):
    """One follower's position in the event log."""

    __tablename__ = "event_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


def from_beginning(_s: Session) -> int:
    return 0


def from_end(s: Session) -> int:
    return last_event_id(s)


class EventFollower:
    def __init__(
        self,
        db: Database,
        name: str,
        *,
        kinds: Collection[str] | None = None,
        start: Start = from_beginning,
        batch: int = 100,
        scan: int = 2000,
        hole_wait: float = HOLE_WAIT,
        recent: timedelta = RECENT,
    ) -> None:
        self.db = db
        self.name = name
        #: the kinds handed to the handler (None: every kind); the cursor passes the others
        self.kinds = frozenset(kinds) if kinds is not None else None
        self.start = start
        self.batch = batch
        self.scan = scan
        self.hole_wait = hole_wait
        self.recent = recent
        self._hole_seen: dict[int, float] = {}
        self._broken: set[int] = set()

    # ------------------------------------------------------------------ cursor
    def cursor(self, s: Session) -> int | None:
        """The last event id passed (None before the first step)."""
        row = s.get(EventCursor, self.name)
        return int(row.last_id) if row is not None else None

    def _ensure(self) -> None:
        """Create the cursor row once (a second process meeting it at the same time loses the
        insert and uses the winner's row)."""
        with self.db.session(readonly=True) as s:
            if self.cursor(s) is not None:
                return
        try:
            with self.db.session() as s:
                if s.get(EventCursor, self.name) is None:
                    s.add(EventCursor(name=self.name, last_id=int(self.start(s)),
                                      updated_at=utcnow()))
        except IntegrityError:
            pass

    # ------------------------------------------------------------------ the loop
    def step(
        self,
        handle: Handler,
        *,
        lock: Callable[[Session], None] | None = None,
        max_chunks: int = MAX_CHUNKS_PER_STEP,
    ) -> int:
        """Handle new events in chunks (one write transaction each); returns the number of
        events passed (0 = nothing new). ``lock`` runs first in each write transaction (a
        caller's own serialisation)."""
        work = 0
        for _ in range(max_chunks):
            done, more = self.chunk(handle, lock=lock)
            work += done
            if not more:
                break
        return work

    def chunk(
        self, handle: Handler, *, lock: Callable[[Session], None] | None = None
    ) -> tuple[int, bool]:
        """One chunk: (events passed, more waiting).

        The ids after the cursor are read in a read-only transaction (no write lock); the write
        transaction then locks the cursor row, checks it has not moved (another process may
        have taken the chunk), handles the wanted events and moves the cursor."""
        self._ensure()
        with self.db.session(readonly=True) as s:
            cursor = self.cursor(s)
            assert cursor is not None
            rows = self._new(s, cursor)
        if not rows:
            return 0, False
        upto, wanted, hole = self._plan(cursor, rows)
        if upto == cursor:
            return 0, False
        with self.db.session() as s:
            if lock is not None:
                lock(s)
            row = s.get(EventCursor, self.name, with_for_update=True, populate_existing=True)
            assert row is not None
            if int(row.last_id) != cursor:
                return 0, True  # another process moved it meanwhile: read again
            self._handle(s, wanted, handle)
            row.last_id = upto
            row.updated_at = utcnow()
        passed = sum(1 for r in rows if r[0] <= upto)
        return passed, not hole and (upto != rows[-1][0] or len(rows) >= self.scan)

    def follow_in(self, s: Session, handle: Handler) -> int:
        """Handle every new event inside the caller's write transaction (the caller holds
        whatever lock serialises it); returns the number of events passed."""
        row = s.get(EventCursor, self.name, with_for_update=True)
        if row is None:
            row = EventCursor(name=self.name, last_id=int(self.start(s)), updated_at=utcnow())
            s.add(row)
            s.flush()
        done = 0
        while True:
            cursor = int(row.last_id)
            rows = self._new(s, cursor)
            if not rows:
                break
            upto, wanted, hole = self._plan(cursor, rows)
            self._handle(s, wanted, handle)
            row.last_id = upto
            row.updated_at = utcnow()
            s.flush()
            done += sum(1 for r in rows if r[0] <= upto)
            if hole or upto == cursor or (upto == rows[-1][0] and len(rows) < self.scan):
                break
        return done

    # ------------------------------------------------------------------ parts
    def _new(self, s: Session, cursor: int) -> Sequence[Any]:
        return s.execute(
            select(Event.id, Event.kind, Event.at)
            .where(Event.id > cursor)
            .order_by(Event.id)
            .limit(self.scan)
        ).all()

    def _plan(self, cursor: int, rows: Sequence[Any]) -> tuple[int, list[int], bool]:
        """Of ``rows`` (id, kind, at) after ``cursor``: the id the cursor may move to, the ids
        to handle (at most ``batch``), and whether it stopped at a young gap."""
        upto, wanted = cursor, list[int]()
        now = datetime.now(UTC)  # producers stamp events with the wall clock
        for ev_id, kind, at in rows:
            if (
                ev_id != upto + 1
                and not self.db.is_sqlite
                and _aware(at) > now - self.recent
                and self._young_hole(upto + 1)
            ):
                return upto, wanted, True
            if self.kinds is None or kind in self.kinds:
                if len(wanted) >= self.batch:
                    break
                wanted.append(ev_id)
            upto = ev_id
        return upto, wanted, False

    def _young_hole(self, missing_id: int) -> bool:
        first = self._hole_seen.setdefault(missing_id, time.monotonic())
        if time.monotonic() - first < self.hole_wait:
            return True
        self._hole_seen.pop(missing_id, None)
        return False

    def _handle(self, s: Session, ids: list[int], handle: Handler) -> None:
        if not ids:
            return
        for ev in s.scalars(select(Event).where(Event.id.in_(ids)).order_by(Event.id)).all():
            try:
                with s.begin_nested():
                    handle(s, ev)
            except SQLAlchemyError:
                raise
            except Exception:
                if ev.id not in self._broken:
                    self._broken.add(ev.id)
                    log.exception(
                        "%s: event %s (%s) could not be handled; passed over",
                        self.name, ev.id, ev.kind,
                    )


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
