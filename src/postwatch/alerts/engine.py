"""The alert engine: events -> alert state -> notifications -> channels, all in the store.

One ``step()`` does three things, each safe to repeat and to run in several processes:

1. events: read new events after the persisted cursor, apply the rules (open, group, resolve
   alerts), move the cursor; in chunks of at most ``batch`` events with rules, each chunk one
   short write transaction (SQLite's write lock is shared with form intake).
2. ``tick``: due work from persisted times: announce new alerts (unless silenced, in a
   maintenance window or inhibited), reminders, escalations, auto-resolve, digests. Each
   decision writes ``alert_notifications`` rows (an outbox) in the same transaction.
3. ``send_due``: claim due notifications with a conditional UPDATE, send them through the
   contact's channels in order (skipping any that would go through the broken path), record
   every attempt, the channel's status and a ``notification_sent``/``notification_failed``
   event.

Nothing lives only in memory: after a restart the next step carries on from the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from postwatch.alerts import channels as channels_mod
from postwatch.alerts import links, messages, notices, routing, rules, schedule
from postwatch.alerts.clock import Clock, SystemClock
from postwatch.config import AccountConfig, Config, ContactConfig
from postwatch.store import Database
from postwatch.store.events import record_event
from postwatch.store.follower import EventFollower
from postwatch.store.models import Event
from postwatch.store.models_alerts import (
    Alert,
    AlertAttempt,
    AlertChannel,
    AlertNotification,
    AlertSilence,
    AlertState,
)

log = logging.getLogger("postwatch.alerts")

Sender = Callable[[str, str, str], tuple[bool, str | None]]
OPEN = ("firing", "acknowledged")
_CANCELLED_BY_RESOLVE = "resolved before it was sent"
DEDUPE = rules.DEDUPE
#: contacts served at the same time by one step
SEND_THREADS = 8
#: event chunks (one short write transaction each) handled per step before due work and sending
MAX_CHUNKS_PER_STEP = 50


@dataclass
class AckResult:
    ok: bool
    message: str
    alert_id: int | None = None


def _fmt_duration(td: timedelta) -> str:
    s = int(td.total_seconds())
    if s % 86400 == 0 and s:
        return f"{s // 86400}d"
    if s % 3600 == 0 and s:
        return f"{s // 3600}h"
    if s % 60 == 0 and s:
        return f"{s // 60} min"
    return f"{s}s"


def acknowledge(
    session: Session, alert_id: int, *, by: str, now: datetime, via: str = "cli"
) -> AckResult:
    """Acknowledge an alert: no more reminders or escalation. Idempotent."""
    alert = session.get(Alert, alert_id, with_for_update=True)
    if alert is None:
        return AckResult(False, f"no alert {alert_id}")
    if alert.state == "resolved":
        return AckResult(True, f"alert {alert_id} is already resolved", alert_id)
    if alert.state == "acknowledged":
        return AckResult(True, f"alert {alert_id} was already acknowledged by {alert.acked_by}",
                         alert_id)
    alert.state = "acknowledged"
    alert.acked_at = now
    alert.acked_by = by[:200]
    alert.next_reminder_at = None
    alert.next_escalation_at = None
    session.execute(
        update(AlertNotification)
        .where(
            AlertNotification.alert_id == alert_id,
            AlertNotification.state == "pending",
            AlertNotification.kind.in_(("reminder", "escalated")),
        )
        .values(state="cancelled", error="acknowledged")
    )
    record_event(
        session,
        "alert_acknowledged",
        account=alert.account,
        mailbox=alert.subject if alert.concern == "mailbox" else None,
        data=_alert_event_data(alert) | {"by": alert.acked_by, "via": via},
        at=now,
    )
    return AckResult(True, f"alert {alert_id} acknowledged by {alert.acked_by}", alert_id)


def _alert_event_data(alert: Alert) -> dict[str, Any]:
    return {
        "alert": alert.id,
        "fingerprint": alert.fingerprint,
        "severity": alert.severity,
        "concern": alert.concern,
        "rule": alert.rule,
        "subject": alert.subject,
    }


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
        self.sender: Sender = sender or channels_mod.send
        #: at most this many events with rules are applied per write transaction...
        self.batch = batch
        #: ...out of at most this many new events read per chunk
        self.scan = scan
        self.follower = EventFollower(
            db, "alerts", kinds=rules.RULES.keys(), start=self._start, batch=batch, scan=scan
        )
        #: digest times already handled (a cache of alert_state rows, saves a query a step)
        self._digest_done: dict[str, datetime] = {}
        #: events and alerts that raised (logged once each)
        self._broken: set[str] = set()
        self._accounts = {a.id: a for a in config.accounts}

    # ------------------------------------------------------------------ the loop
    def step(self) -> int:
        """Do everything that is due now; returns how much work was done (0 = idle).

        Each part runs in short transactions of its own: new events through the store's event
        follower (chunks of at most ``batch`` rule-relevant events, the cursor moving with
        each chunk), then the due work, then sending (outside any transaction). On SQLite the
        write lock is shared with form intake, so no transaction here holds it for long."""
        work = self.follower.step(self._apply, lock=self._lock, max_chunks=MAX_CHUNKS_PER_STEP)
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

    # ------------------------------------------------------------------ 1. events
    @staticmethod
    def _start(s: Session) -> int:
        """Where the alerts follower starts the first time: the cursor an older postwatch kept
        in ``alert_state`` (so an upgrade neither repeats nor skips events), else the start."""
        row = s.get(AlertState, "cursor")
        return int(row.value) if row is not None else 0

    def process_events(self, s: Session) -> int:
        """Apply every new event inside the caller's write transaction (which holds the
        step lock); ``step`` uses short transactions of its own instead."""
        return self.follower.follow_in(s, self._apply)

    def _apply(self, s: Session, ev: Event) -> None:
        view = rules.EventView(ev.id, ev.kind, ev.at, ev.account, ev.mailbox, ev.form, ev.data)
        for sig in rules.signals(self.config, view):
            if sig.account not in self._accounts:
                continue
            if sig.action == "fire":
                self._fire(s, sig, ev)
            else:
                for rule in sig.rules:
                    key = rules.fingerprint(sig.account, sig.concern, sig.subject, rule)
                    alert = s.scalar(select(Alert).where(Alert.open_key == key))
                    if alert is not None:
                        self._resolve(s, alert, ev.at, facts=sig.data)

    @staticmethod
    def _count_once(
        alert: Alert | None, sig: rules.Signal, ev: Event
    ) -> tuple[int, dict[str, Any]]:
        """(what the event adds to the alert's count, the alert's new bookkeeping).

        The reports of one delivery attempt (the worker's reply, the MTA's log line, the DSN)
        share names (``rules.attempt_keys``); names met together belong to one attempt. An
        event whose names are all new adds its weight; one that names a known attempt adds
        nothing; one that shows two attempts counted apart to be one takes one back. The
        sign-ups the alert is about are remembered as a set."""
        book = dict((alert.data.get(DEDUPE) if alert is not None else None) or {})
        ids: dict[str, str] = dict(book.get("ids") or {})
        subs = list(book.get("signups") or [])
        view = rules.EventView(ev.id, ev.kind, ev.at, ev.account, ev.mailbox, ev.form, ev.data)
        keys = rules.attempt_keys(view)
        weight = sig.weight
        if keys:
            # a Message-ID is the same for every attempt of a job: a weak name. It joins an
            # event to an attempt only when the event names nothing stronger, or when the
            # attempt it points to was itself known by that weak name alone.
            strong = {k for k in keys if not k.startswith("m:")}
            weak = keys - strong
            groups = {ids[k] for k in (strong or weak) if k in ids}
            if strong:
                groups |= {ids[k] for k in weak if k in ids and ids[k].startswith("m:")}
            if groups:
                weight = -(len(groups) - 1) if sig.weight else 0
                canon = min(groups)
                if len(groups) > 1:
                    ids = {k: canon if g in groups else g for k, g in ids.items()}
            else:
                canon = min(strong or weak)
            if strong and canon.startswith("m:"):
                new = min(strong)
                ids = {k: new if g == canon else g for k, g in ids.items()}
                canon = new
            for k in keys:
                ids[k] = canon
            if len(ids) > rules.MAX_REMEMBERED:
                ids = dict(list(ids.items())[-rules.MAX_REMEMBERED:])
        sub = rules.submission_of(view)
        if sub is not None and sub not in subs:
            subs.append(sub)
        book["ids"] = ids
        book["signups"] = subs[-rules.MAX_REMEMBERED:]
        book["signup_count"] = max(int(book.get("signup_count") or 0), len(subs))
        return weight, book

    def _fire(self, s: Session, sig: rules.Signal, ev: Event) -> None:
        key = rules.fingerprint(sig.account, sig.concern, sig.subject, sig.rule)
        alert = s.scalar(select(Alert).where(Alert.open_key == key))
        if alert is None:
            alert = self._reopen(s, key, ev)
        weight, book = self._count_once(alert, sig, ev)
        if alert is None:
            alert = Alert(
                fingerprint=key,
                open_key=key,
                account=sig.account,
                concern=sig.concern,
                subject=sig.subject,
                rule=sig.rule,
                severity=sig.severity,
                state="firing",
                started_at=ev.at,
                last_seen_at=ev.at,
                count=max(weight, 0),
                level=0,
                announced=False,
                first_event=ev.id,
                last_event=ev.id,
                data=dict(sig.data) | {DEDUPE: book},
            )
            self._by_count(alert)
            s.add(alert)
            s.flush()
            record_event(
                s,
                "alert_fired",
                account=alert.account,
                mailbox=alert.subject if alert.concern == "mailbox" else None,
                data=_alert_event_data(alert) | {"event": ev.id},
                at=self.clock.now(),
            )
            return
        # grouped: one alert, a count (each attempt once) and the newest facts
        alert.count = max(alert.count + weight, 1 if alert.count else 0)
        alert.last_seen_at = max(alert.last_seen_at, ev.at)
        alert.last_event = ev.id
        alert.data = {**alert.data, **sig.data, DEDUPE: book}
        severity = sig.severity
        if rules.RANK[severity] > rules.RANK[alert.severity]:
            alert.severity = severity
            alert.announced = False  # worse than before: tell again
            if alert.state == "acknowledged":
                alert.state = "firing"
                alert.acked_at = None
                alert.acked_by = None
        if self._by_count(alert):
            alert.announced = False

    def _by_count(self, alert: Alert) -> bool:
        """Temporary delivery failures: low until they keep happening, then a warning."""
        limit = self.config.alerts.deferrals_before_warning
        if alert.rule == "delivery" and alert.severity == "low" and alert.count >= limit:
            alert.severity = "warning"
            return True
        return False

    def _reopen(self, s: Session, key: str, ev: Event) -> Alert | None:
        """An alert that resolved moments ago and whose resolution has not been sent yet is
        opened again (a flap), instead of a new alert and a new message."""
        now = self.clock.now()
        recent = s.scalar(
            select(Alert)
            .where(Alert.fingerprint == key, Alert.state == "resolved")
            .order_by(Alert.id.desc())
            .limit(1)
        )
        if recent is None or recent.resolved_at is None:
            return None
        if recent.resolved_at < min(now, ev.at) - self.config.alerts.flap_hold:
            return None
        told_over = s.scalar(
            select(AlertNotification.id).where(
                AlertNotification.alert_id == recent.id,
                AlertNotification.kind == "resolved",
                AlertNotification.state.in_(("sending", "sent")),
            )
        )
        if told_over is not None:
            return None
        s.execute(
            update(AlertNotification)
            .where(
                AlertNotification.alert_id == recent.id,
                AlertNotification.state == "pending",
                AlertNotification.kind == "resolved",
            )
            .values(state="cancelled", error="it came back before this was sent")
        )
        s.execute(  # messages the resolution had cancelled are wanted again
            update(AlertNotification)
            .where(
                AlertNotification.alert_id == recent.id,
                AlertNotification.state == "cancelled",
                AlertNotification.error == _CANCELLED_BY_RESOLVE,
            )
            .values(state="pending", error=None)
        )
        recent.state = "acknowledged" if recent.acked_at is not None else "firing"
        recent.open_key = key
        recent.resolved_at = None
        recent.data = {k: v for k, v in recent.data.items() if k != "resolution"}
        account = self._accounts.get(recent.account)
        if recent.announced and recent.state == "firing" and account is not None:
            recent.next_reminder_at = now + self.config.alerts.repeat_every
            recent.next_escalation_at = self._next_escalation(account, recent, now)
        record_event(
            s,
            "alert_fired",
            account=recent.account,
            mailbox=recent.subject if recent.concern == "mailbox" else None,
            data=_alert_event_data(recent) | {"event": ev.id, "reopened": True},
            at=now,
        )
        return recent

    def _release_inhibited(self, s: Session, cause: Alert, now: datetime) -> None:
        """``cause`` is over: the alerts it held back on the same subject are part of the same
        incident. One never announced is dropped (resolved without a message: its cause is
        gone, telling it now would be late news); one already announced starts its reminder
        and escalation times afresh instead of catching up at once."""
        held = rules.INHIBITS.get(cause.rule, set())
        if not held:
            return
        others = list(
            s.scalars(
                select(Alert).where(
                    Alert.account == cause.account,
                    Alert.concern == cause.concern,
                    Alert.subject == cause.subject,
                    Alert.state.in_(OPEN),
                    Alert.id != cause.id,
                )
            )
        )
        for other in others:
            if other.rule not in held:
                continue
            still = [
                o for o in others
                if o.id != other.id and other.rule in rules.INHIBITS.get(o.rule, set())
            ]
            if still:
                continue
            if not other.announced:
                why = f"held back by alert {cause.id} ({cause.rule}), which is over"
                self._resolve(s, other, now, facts={"dropped": why}, dropped=True)
                continue
            account = self._accounts.get(other.account)
            if other.state == "firing" and account is not None:
                other.next_reminder_at = now + self.config.alerts.repeat_every
                if other.next_escalation_at is not None:
                    other.next_escalation_at = now + self.config.alerts.escalate_after

    def _resolve(
        self,
        s: Session,
        alert: Alert,
        at: datetime,
        facts: dict[str, Any] | None = None,
        *,
        dropped: bool = False,
    ) -> None:
        now = self.clock.now()
        alert.state = "resolved"
        alert.resolved_at = at
        alert.open_key = None
        alert.next_escalation_at = None
        alert.next_reminder_at = None
        if facts:
            alert.data = {**alert.data, "resolution": facts}
        s.execute(
            update(AlertNotification)
            .where(AlertNotification.alert_id == alert.id, AlertNotification.state == "pending")
            .values(state="cancelled", error=_CANCELLED_BY_RESOLVE)
        )
        record_event(
            s,
            "alert_resolved",
            account=alert.account,
            mailbox=alert.subject if alert.concern == "mailbox" else None,
            data=_alert_event_data(alert) | ({"dropped": True} if dropped else {}),
            at=now,
        )
        self._release_inhibited(s, alert, now)
        if not alert.announced:
            return
        told = s.execute(
            select(AlertNotification.contact, AlertNotification.role)
            .where(AlertNotification.alert_id == alert.id, AlertNotification.state == "sent")
            .distinct()
        ).all()
        account = self._accounts.get(alert.account)
        if account is None:
            return
        names = {name for name, _role in told}
        for contact in account.contacts:
            if contact.name in names:
                self._notify(s, alert, account, contact, "resolved", now)

    # ------------------------------------------------------------------ 2. due work
    def tick(self, s: Session) -> int:
        now = self.clock.now()
        work = 0
        open_alerts = list(s.scalars(select(Alert).where(Alert.state.in_(OPEN))))
        # auto-resolve what has no recovery event
        for a in open_alerts:
            quiet_since = a.last_seen_at + self.config.alerts.resolve_after
            if a.rule in rules.AUTO_RESOLVE and quiet_since <= now:
                self._resolve(s, a, now, facts={"auto": "no news"})
                work += 1
        open_alerts = [a for a in open_alerts if a.state in OPEN]
        by_subject: dict[tuple[str, str, str], list[Alert]] = {}
        for a in open_alerts:
            by_subject.setdefault((a.account, a.concern, a.subject), []).append(a)
        db_silences = list(s.scalars(select(AlertSilence).where(AlertSilence.ends > now)))
        for a in open_alerts:
            work += self._guarded(
                s, f"alert {a.id}", self._due, s, a, by_subject, db_silences, now
            )
        work += self._digests(s, open_alerts, by_subject, db_silences, now)
        return work

    def _guarded(self, s: Session, what: str, fn: Callable[..., int | None], *args: Any) -> int:
        """Run one unit of work in a savepoint: a bad event or alert is logged and passed
        over instead of stopping every alert behind it. Store errors still stop the step."""
        try:
            with s.begin_nested():
                return fn(*args) or 0
        except SQLAlchemyError:
            raise
        except Exception:
            if what not in self._broken:
                self._broken.add(what)
                log.exception("alerts: %s could not be handled; passed over", what)
            return 0

    def _due(
        self,
        s: Session,
        a: Alert,
        by_subject: dict[tuple[str, str, str], list[Alert]],
        db_silences: list[AlertSilence],
        now: datetime,
    ) -> int:
        """Announce, escalate or remind one alert when due; returns the work done."""
        work = 0
        account = self._accounts.get(a.account)
        if account is None or a.state != "firing" or a.severity == "low":
            return 0
        if self.suppressed(a, by_subject, db_silences, now):
            return 0
        if not a.announced:
            for contact in self._told_up_to(account, a):
                self._notify(s, a, account, contact, "fired", now)
            a.announced = True
            a.next_reminder_at = now + self.config.alerts.repeat_every
            a.next_escalation_at = self._next_escalation(account, a, now)
            return 1
        if (
            a.next_escalation_at is not None
            and a.next_escalation_at > now
            and self._nobody_reached(s, a)
        ):
            a.next_escalation_at = now  # every message failed for good: do not wait
        if a.next_escalation_at is not None and a.next_escalation_at <= now:
            a.level += 1
            level_contacts = routing.contacts_for_level(
                self.config, account, a.concern, a.level
            )
            for contact in level_contacts:
                self._notify(s, a, account, contact, "escalated", now)
            record_event(
                s,
                "alert_escalated",
                account=a.account,
                mailbox=a.subject if a.concern == "mailbox" else None,
                data=_alert_event_data(a) | {"level": a.level},
                at=now,
            )
            a.next_escalation_at = self._next_escalation(account, a, now)
            work += 1
        if a.next_reminder_at is not None and a.next_reminder_at <= now:
            for contact in self._told_up_to(account, a):
                self._notify(s, a, account, contact, "reminder", now)
            a.next_reminder_at = now + self.config.alerts.repeat_every
            work += 1
        return work

    @staticmethod
    def _nobody_reached(s: Session, a: Alert) -> bool:
        states = set(
            s.scalars(
                select(AlertNotification.state).where(
                    AlertNotification.alert_id == a.id,
                    AlertNotification.kind.in_(("fired", "escalated")),
                    AlertNotification.state != "cancelled",
                )
            )
        )
        return states == {"failed"}

    def _told_up_to(self, account: AccountConfig, a: Alert) -> list[ContactConfig]:
        out: list[ContactConfig] = []
        for level in range(a.level + 1):
            out += routing.contacts_for_level(self.config, account, a.concern, level)
        return out

    def _next_escalation(self, account: AccountConfig, a: Alert, now: datetime) -> datetime | None:
        levels = routing.ladder(self.config, account, a.concern)
        if a.level + 1 < len(levels):
            return now + self.config.alerts.escalate_after
        return None

    def held_back(self, s: Session) -> dict[int, str]:
        """Open alerts whose notifications are held back now, and why."""
        now = self.clock.now()
        open_alerts = list(s.scalars(select(Alert).where(Alert.state.in_(OPEN))))
        by_subject: dict[tuple[str, str, str], list[Alert]] = {}
        for a in open_alerts:
            by_subject.setdefault((a.account, a.concern, a.subject), []).append(a)
        db_silences = list(s.scalars(select(AlertSilence).where(AlertSilence.ends > now)))
        out = {}
        for a in open_alerts:
            why = self.suppressed(a, by_subject, db_silences, now)
            if why:
                out[a.id] = why
        return out

    def suppressed(
        self,
        a: Alert,
        by_subject: dict[tuple[str, str, str], list[Alert]],
        db_silences: list[AlertSilence],
        now: datetime,
    ) -> str:
        """Why the alert's notifications are held back now ('' when they are not)."""
        for other in by_subject.get((a.account, a.concern, a.subject), []):
            if other.id != a.id and a.rule in rules.INHIBITS.get(other.rule, set()):
                return f"inhibited by alert {other.id} ({other.rule})"
        for sil in self.config.alerts.silences:
            if schedule.silence_matches(sil, a.account, a.concern, a.subject, now):
                return f"silenced: {sil.reason}".strip()
        for dbs in db_silences:
            if dbs.starts > now:
                continue
            if dbs.account and dbs.account != a.account:
                continue
            if dbs.concern and dbs.concern != a.concern:
                continue
            if dbs.subject and dbs.subject.lower() != a.subject:
                continue
            return f"silenced ({dbs.id}): {dbs.reason}".strip()
        for m in self.config.alerts.maintenance:
            if schedule.in_maintenance(m, a.account, a.concern, now):
                return f"maintenance window: {m.reason}".strip()
        return ""

    # ------------------------------------------------------------------ messages
    def _tz(self, contact: ContactConfig) -> str:
        return contact.timezone or self.config.alerts.timezone

    def facts(self, s: Session, a: Alert) -> messages.AlertFacts:
        return notices.facts(self.config, s, a)

    def _notify(
        self,
        s: Session,
        a: Alert,
        account: AccountConfig,
        contact: ContactConfig,
        kind: str,
        now: datetime,
    ) -> AlertNotification | None:
        if kind == "reminder":
            waiting = s.scalar(
                select(AlertNotification.id).where(
                    AlertNotification.alert_id == a.id,
                    AlertNotification.contact == contact.name,
                    AlertNotification.state.in_(("pending", "sending")),
                )
            )
            if waiting is not None:
                return None  # the earlier message has not gone out yet: no reminder on top
        tz = self._tz(contact)
        secret = links.link_secret(self.config, s)
        token = links.make_token(secret, a.id, contact.name, now)
        url = links.ack_url(self.config, token)
        title, body = messages.render(
            self.facts(s, a),
            kind=kind,
            lang=contact.language,
            tz=tz,
            now=now,
            ack_url=url,
            ack_until=now + self.config.alerts.ack_link_ttl if url else None,
            role=contact.role,
            escalate_after=_fmt_duration(self.config.alerts.escalate_after),
        )
        not_before = now
        if kind == "resolved":  # wait a moment: if it comes back, nobody is told it is over
            not_before = now + self.config.alerts.flap_hold
        # only the start and the escalation of a critical alert break quiet hours
        if a.severity != "critical" or kind not in ("fired", "escalated"):
            quiet_end = schedule.quiet_until(contact.quiet_hours, tz, now)
            if quiet_end is not None:
                not_before = max(not_before, quiet_end)
        n = AlertNotification(
            alert_id=a.id,
            account=account.id,
            contact=contact.name,
            contact_key=routing.contact_key(account, contact),
            role=contact.role,
            kind=kind,
            language=contact.language,
            title=title,
            body=body,
            state="pending",
            created_at=now,
            not_before=not_before,
            rounds=0,
            data={},
        )
        s.add(n)
        return n

    # ------------------------------------------------------------------ digests
    def _digests(
        self,
        s: Session,
        open_alerts: list[Alert],
        by_subject: dict[tuple[str, str, str], list[Alert]],
        db_silences: list[AlertSilence],
        now: datetime,
    ) -> int:
        people: dict[str, list[tuple[AccountConfig, ContactConfig]]] = {}
        for account in self.config.accounts:
            for contact in account.contacts:
                people.setdefault(routing.contact_key(account, contact), []).append(
                    (account, contact)
                )
        low = [a for a in open_alerts if a.severity == "low" and a.state == "firing"]
        work = 0
        for key, entries in people.items():
            first_contact = entries[0][1]
            tz = self._tz(first_contact)
            spec = first_contact.digest or self.config.alerts.digest
            due = schedule.last_digest_time(spec, tz, now)
            if due is None:
                continue
            state_key = f"digest:{key}"[:200]
            if self._digest_done.get(state_key) == due:
                continue
            row = s.get(AlertState, state_key)
            if row is None:
                s.add(AlertState(key=state_key, value=due.isoformat()))
                continue
            if datetime.fromisoformat(row.value) >= due:
                self._digest_done[state_key] = due
                continue
            row.value = due.isoformat()
            items: list[messages.DigestItem] = []
            for account, contact in entries:
                mine = {
                    c
                    for c in routing.CONCERNS + tuple(account.responsibilities)
                    if routing.ladder(self.config, account, c)
                    and contact.role in routing.ladder(self.config, account, c)[0]
                }
                for a in low:
                    if a.account != account.id or a.concern not in mine:
                        continue
                    if self.suppressed(a, by_subject, db_silences, now):
                        continue
                    full_at = self._full_at(a, by_subject)
                    items.append(messages.DigestItem(self.facts(s, a), full_at))
            if not items:
                continue
            far = datetime.max.replace(tzinfo=now.tzinfo)
            items.sort(
                key=lambda it: (
                    it.full_at or far,
                    -float(it.facts.data.get("percent") or 0),
                    it.facts.id,
                )
            )
            accounts = sorted({it.facts.account_id for it in items})
            lang = first_contact.language
            title, body = messages.render_digest(
                items,
                lang=lang,
                tz=tz,
                when=schedule.describe_digest(spec, lang),
                accounts=", ".join(accounts),
            )
            _account0, contact0 = entries[0]
            data: dict[str, Any] = {"alerts": [it.facts.id for it in items], "accounts": accounts}
            if len(accounts) > 1:
                # the record of one account must not show another account's items
                per: dict[str, dict[str, str]] = {}
                for acc_id in accounts:
                    t_acc, b_acc = messages.render_digest(
                        [it for it in items if it.facts.account_id == acc_id],
                        lang=lang,
                        tz=tz,
                        when=schedule.describe_digest(spec, lang),
                        accounts=acc_id,
                    )
                    per[acc_id] = {"title": t_acc, "body": b_acc}
                data["per_account"] = per
            s.add(
                AlertNotification(
                    alert_id=None,
                    account=accounts[0] if len(accounts) == 1 else None,
                    contact=contact0.name,
                    contact_key=key,
                    role=contact0.role,
                    kind="digest",
                    language=lang,
                    title=title,
                    body=body,
                    state="pending",
                    created_at=now,
                    not_before=schedule.quiet_until(contact0.quiet_hours, tz, now) or now,
                    rounds=0,
                    data=data,
                )
            )
            work += 1
        return work

    @staticmethod
    def _full_at(a: Alert, by_subject: dict[tuple[str, str, str], list[Alert]]) -> datetime | None:
        for cand in [a, *by_subject.get((a.account, a.concern, a.subject), [])]:
            v = cand.data.get("full_at")
            if isinstance(v, str):
                try:
                    dt = datetime.fromisoformat(v)
                except ValueError:
                    continue
                if dt.tzinfo is not None:
                    return dt
        return None

    # ------------------------------------------------------------------ 3. sending
    def send_due(self, limit: int = 200) -> int:
        """Send what is due. Each contact's messages go out in order, one after the other;
        different contacts in parallel, so a channel that hangs delays only its own contact."""
        now = self.clock.now()
        with self.db.session(readonly=True) as s:
            rows = list(
                s.execute(
                    select(AlertNotification.id, AlertNotification.contact_key)
                    .where(
                        AlertNotification.not_before <= now,
                        (AlertNotification.state == "pending")
                        | (
                            (AlertNotification.state == "sending")
                            & (AlertNotification.claimed_until < now)
                        ),
                    )
                    .order_by(AlertNotification.id)
                    .limit(limit)
                ).all()
            )
        groups: dict[str, list[int]] = {}
        for nid, key in rows:
            if self._claim(nid, now):
                groups.setdefault(key, []).append(nid)
        if not groups:
            return 0
        if len(groups) == 1:
            for nid in next(iter(groups.values())):
                self._deliver(nid)
        else:
            with ThreadPoolExecutor(max_workers=min(SEND_THREADS, len(groups))) as pool:
                for _ in pool.map(self._deliver_all, groups.values()):
                    pass
        return sum(len(g) for g in groups.values())

    def _deliver_all(self, ids: list[int]) -> None:
        for nid in ids:
            self._deliver(nid)

    def _claim(self, nid: int, now: datetime) -> bool:
        with self.db.session() as s:
            res = s.execute(
                update(AlertNotification)
                .where(
                    AlertNotification.id == nid,
                    (AlertNotification.state == "pending")
                    | (
                        (AlertNotification.state == "sending")
                        & (AlertNotification.claimed_until < now)
                    ),
                )
                .values(state="sending", claimed_until=now + timedelta(minutes=5))
            )
            return bool(getattr(res, "rowcount", 0))

    def _failing_mailboxes(self, s: Session, account: str) -> set[str]:
        rows = s.scalars(
            select(Alert.subject).where(
                Alert.account == account,
                Alert.concern == "mailbox",
                Alert.state.in_(OPEN),
                Alert.rule.in_(("mailbox_full", "delivery"))
                | ((Alert.rule == "quota") & (Alert.severity == "critical")),
            )
        )
        return {r.lower() for r in rows}

    def _contact(self, n: AlertNotification) -> tuple[AccountConfig, ContactConfig] | None:
        for account in self.config.accounts:
            if n.account is not None and account.id != n.account:
                continue
            for c in account.contacts:
                if c.name == n.contact and routing.contact_key(account, c) == n.contact_key:
                    return account, c
        return None

    def _deliver(self, nid: int) -> None:
        with self.db.session(readonly=True) as s:
            n = s.get(AlertNotification, nid)
            assert n is not None
            found = self._contact(n)
            avoid = routing.Avoid(frozenset(), frozenset())
            alert = s.get(Alert, n.alert_id) if n.alert_id is not None else None
            if found is not None:
                account, _c = found
                failing = self._failing_mailboxes(s, account.id)
                if alert is not None:
                    avoid = routing.avoid_for(account, alert.subject, alert.concern, failing)
                else:
                    avoid = routing.avoid_for(account, "", "digest", failing)
        attempts: list[tuple[int, str, str, str | None, datetime]] = []
        sent_on: str | None = None
        if found is None:
            last_error: str | None = "the contact is no longer in the config"
        else:
            last_error = None
            _account, contact = found
            for i, secret_url in enumerate(contact.channels):
                url = secret_url.get_secret_value()
                info = channels_mod.describe(url, i)
                if not info.valid:
                    attempts.append((i, info.masked, "skipped", info.error, self.clock.now()))
                    last_error = info.error
                    continue
                why = avoid.reason(info)
                if why:
                    attempts.append((i, info.masked, "skipped", why, self.clock.now()))
                    last_error = f"no channel that avoids the broken path ({why})"
                    continue
                ok, error = self.sender(url, n.title, n.body)
                attempts.append((i, info.masked, "sent" if ok else "failed", error,
                                 self.clock.now()))
                if ok:
                    sent_on = info.masked
                    break
                last_error = error
        self._record(nid, attempts, sent_on, last_error)

    def _record(
        self,
        nid: int,
        attempts: list[tuple[int, str, str, str | None, datetime]],
        sent_on: str | None,
        last_error: str | None,
    ) -> None:
        now = self.clock.now()
        with self.db.session() as s:
            n = s.get(AlertNotification, nid, with_for_update=True)
            assert n is not None
            alert = s.get(Alert, n.alert_id) if n.alert_id is not None else None
            box = alert.subject if alert is not None and alert.concern == "mailbox" else None
            base = {
                "alert": n.alert_id,
                "notification": n.id,
                "contact": n.contact,
                "role": n.role,
                "kind": n.kind,
                "message": n.title[:200],
            }
            for index, masked, result, error, at in attempts:
                s.add(AlertAttempt(notification_id=nid, at=at, channel_index=index,
                                   channel=masked, result=result, error=error))
                if result == "skipped":
                    continue
                self._channel_status(s, n.contact_key, index, masked, result == "sent", error, at)
                kind = "notification_sent" if result == "sent" else "notification_failed"
                data = base | {"channel": masked}
                if error:
                    data["error"] = error
                record_event(s, kind, account=n.account, mailbox=box, data=data, at=at)
            if sent_on is not None:
                n.state, n.sent_at, n.channel, n.error = "sent", now, sent_on, None
                return
            n.rounds += 1
            n.error = last_error
            no_channel = all(r == "skipped" for _i, _m, r, _e, _a in attempts)
            if no_channel or n.rounds >= self.config.alerts.send_attempts:
                n.state = "failed"
                record_event(
                    s,
                    "notification_failed",
                    account=n.account,
                    mailbox=box,
                    data=base | {"channel": None, "error": last_error, "final": True},
                    at=now,
                )
                log.warning(
                    "notification %s to %s failed for good: %s", n.id, n.contact, last_error
                )
            else:
                wait = self.config.alerts.retry_after * (2 ** (n.rounds - 1))
                n.state = "pending"
                n.not_before = now + min(wait, timedelta(hours=1))
                n.claimed_until = None

    @staticmethod
    def _channel_status(
        s: Session,
        key: str,
        index: int,
        masked: str,
        ok: bool,
        error: str | None,
        at: datetime,
    ) -> None:
        row = s.get(AlertChannel, (key, index))
        if row is None:
            row = AlertChannel(contact_key=key, channel_index=index, channel=masked, failures=0)
            s.add(row)
        row.channel = masked
        if ok:
            row.last_ok_at = at
            row.failures = 0
        else:
            row.last_error_at = at
            row.last_error = error
            row.failures = (row.failures or 0) + 1
