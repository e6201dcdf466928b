"""The alert engine: a small coordinator of events -> alert state -> notifications -> channels.

One ``step()`` does three things, each safe to repeat and to run in several processes, all in
the store (nothing lives only in memory: after a restart the next step carries on):

1. events: the store's event follower (``store/follower.py``, cursor ``alerts``) hands new
   events to the **lifecycle** (``lifecycle.py``: fire / reopen / resolve / ack), in chunks of
   at most ``batch`` events with rules, each chunk one short write transaction;
2. due work (``due.py``): announce, escalate, remind, auto-resolve, digests, unless held back
   by **suppression** (``suppression.py``: inhibition, silences, maintenance); messages are
   rendered from the **notices** (``notices.py``: facts, rendering, quiet hours);
3. **dispatch** (``dispatch.py``): claim due notifications, send, record.

The injected clock (``alerts/clock.py``) is the only source of "now" for alert decisions.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from postwatch.alerts import channels as channels_mod
from postwatch.alerts import links, messages, rules
from postwatch.alerts.clock import Clock, SystemClock
from postwatch.alerts.dispatch import Dispatch, Sender
from postwatch.alerts.due import DueWork
from postwatch.alerts.lifecycle import (
    OPEN,
    AckResult,
    Lifecycle,
    acknowledge,
    alert_event_data,
)
from postwatch.alerts.notices import Notices
from postwatch.alerts.suppression import Suppression
from postwatch.config import Config
from postwatch.store import Database
from postwatch.store.follower import EventFollower
from postwatch.store.models_alerts import Alert, AlertState

__all__ = [
    "OPEN",
    "AckResult",
    "Engine",
    "Sender",
    "acknowledge",
    "alert_event_data",
]

#: event chunks (one short write transaction each) handled per step before due work and sending
MAX_CHUNKS_PER_STEP = 50


class Engine:
    def __init__(
        self,
        config: Config,
        db: Database,
        *,
        clock: Clock | None = None,
        sender: Sender | None = None,
        batch: int = 100,
        scan: int = 2000,
    ) -> None:
        self.config = config
        self.db = db
        self.clock: Clock = clock or SystemClock()
        self.notices = Notices(config)
        self.suppression = Suppression(config)
        self.lifecycle = Lifecycle(config, self.clock, self.notices)
        self.due = DueWork(config, self.clock, self.lifecycle, self.suppression, self.notices)
        self.dispatch = Dispatch(config, db, self.clock, sender or channels_mod.send)
        #: at most ``batch`` events with rules are applied per write transaction, out of at
        #: most ``scan`` new events read per chunk
        self.follower = EventFollower(
            db, "alerts", kinds=rules.RULES.keys(), start=self._start, batch=batch, scan=scan
        )

    def step(self) -> int:
        """Do everything that is due now; returns how much work was done (0 = idle).

        Each part runs in short transactions of its own: new events through the store's event
        follower (chunks of at most ``batch`` rule-relevant events, the cursor moving with
        each chunk), then the due work, then sending (outside any transaction). On SQLite the
        write lock is shared with form intake, so no transaction here holds it for long."""
        work = self.follower.step(
            self.lifecycle.apply, lock=self._lock, max_chunks=MAX_CHUNKS_PER_STEP
        )
        with self.db.session() as s:
            self._lock(s)
            work += self.tick(s)
        work += self.send_due()
        return work

    def _lock(self, s: Session) -> None:
        """Serialise steps across processes (SQLite: BEGIN IMMEDIATE already does)."""
        row = s.get(AlertState, "cursor", with_for_update=True)
        if row is None:
            links.ensure_state(s, "cursor", "0")
            s.get(AlertState, "cursor", with_for_update=True, populate_existing=True)

    @staticmethod
    def _start(s: Session) -> int:
        """Where the alerts follower starts the first time: the cursor an older postwatch kept
        in ``alert_state`` (so an upgrade neither repeats nor skips events), else the start."""
        row = s.get(AlertState, "cursor")
        return int(row.value) if row is not None else 0

    def process_events(self, s: Session) -> int:
        """Apply every new event inside the caller's write transaction (which holds the
        step lock); ``step`` uses short transactions of its own instead."""
        return self.follower.follow_in(s, self.lifecycle.apply)

    def tick(self, s: Session) -> int:
        """The due work, in the caller's transaction (which holds the step lock)."""
        return self.due.tick(s)

    def send_due(self, limit: int = 200) -> int:
        return self.dispatch.send_due(limit)

    def held_back(self, s: Session) -> dict[int, str]:
        """Open alerts whose notifications are held back now, and why."""
        return self.suppression.held_back(s, self.clock.now())

    def facts(self, s: Session, a: Alert) -> messages.AlertFacts:
        return self.notices.facts(s, a)
