"""Lifecycle: events -> alerts. Fire (open or group), reopen a flap, resolve, acknowledge.

One alert per ``account/concern/subject/rule`` fingerprint while it is open (``open_key``).
A ``fire`` signal opens it or groups into it (its count grows once per delivery attempt, its
facts are the newest); a worse severity tells again; a ``resolve`` signal ends it and queues
one "resolved" message to everyone who was told. An alert that resolved moments ago and whose
resolution was not sent yet is reopened instead of a new one (a flap). When an alert ends, the
alerts it held back on the same subject (``rules.INHIBITS``) end with it if they were never
announced, or start their reminder and escalation times afresh. Everything happens in the
caller's transaction; times come from the injected clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from postwatch.alerts import messages, routing, rules
from postwatch.alerts.clock import Clock
from postwatch.alerts.notices import Notices
from postwatch.config import AccountConfig, Config, ContactConfig
from postwatch.store.events import EventKind, record_event
from postwatch.store.models import Event
from postwatch.store.models_alerts import Alert, AlertNotification

OPEN = rules.OPEN
CANCELLED_BY_RESOLVE = "resolved before it was sent"


@dataclass
class AckResult:
    ok: bool
    message: str
    alert_id: int | None = None


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
    alert.acked_by = messages.clean_text(by)[:200] or "?"
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
        EventKind.ALERT_ACKNOWLEDGED,
        account=alert.account,
        mailbox=alert.subject if alert.concern == "mailbox" else None,
        data=alert_event_data(alert) | {"by": alert.acked_by, "via": via},
        at=now,
    )
    return AckResult(True, f"alert {alert_id} acknowledged by {alert.acked_by}", alert_id)


def alert_event_data(alert: Alert) -> dict[str, Any]:
    return {
        "alert": alert.id,
        "fingerprint": alert.fingerprint,
        "severity": alert.severity,
        "concern": alert.concern,
        "rule": alert.rule,
        "subject": alert.subject,
    }



class Lifecycle:
    def __init__(self, config: Config, clock: Clock, notices: Notices) -> None:
        self.config = config
        self.clock = clock
        self.notices = notices
        self._accounts = {a.id: a for a in config.accounts}

    def apply(self, s: Session, ev: Event) -> None:
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
                        self.resolve(s, alert, ev.at, facts=sig.data)

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
        book = dict((alert.data.get(rules.DEDUPE) if alert is not None else None) or {})
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
                data=dict(sig.data) | {rules.DEDUPE: book},
            )
            self._by_count(alert)
            s.add(alert)
            s.flush()
            record_event(
                s,
                EventKind.ALERT_FIRED,
                account=alert.account,
                mailbox=alert.subject if alert.concern == "mailbox" else None,
                data=alert_event_data(alert) | {"event": ev.id},
                at=self.clock.now(),
            )
            return
        # grouped: one alert, a count (each attempt once) and the newest facts
        alert.count = max(alert.count + weight, 1 if alert.count else 0)
        alert.last_seen_at = max(alert.last_seen_at, ev.at)
        alert.last_event = ev.id
        alert.data = {**alert.data, **sig.data, rules.DEDUPE: book}
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
                AlertNotification.error == CANCELLED_BY_RESOLVE,
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
            recent.next_escalation_at = self.next_escalation(account, recent, now)
        record_event(
            s,
            EventKind.ALERT_FIRED,
            account=recent.account,
            mailbox=recent.subject if recent.concern == "mailbox" else None,
            data=alert_event_data(recent) | {"event": ev.id, "reopened": True},
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
                self.resolve(s, other, now, facts={"dropped": why}, dropped=True)
                continue
            account = self._accounts.get(other.account)
            if other.state == "firing" and account is not None:
                other.next_reminder_at = now + self.config.alerts.repeat_every
                if other.next_escalation_at is not None:
                    other.next_escalation_at = now + self.config.alerts.escalate_after

    def resolve(
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
            .values(state="cancelled", error=CANCELLED_BY_RESOLVE)
        )
        record_event(
            s,
            EventKind.ALERT_RESOLVED,
            account=alert.account,
            mailbox=alert.subject if alert.concern == "mailbox" else None,
            data=alert_event_data(alert) | ({"dropped": True} if dropped else {}),
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
                self.notices.notify(s, alert, account, contact, "resolved", now)

    def told_up_to(self, account: AccountConfig, a: Alert) -> list[ContactConfig]:
        out: list[ContactConfig] = []
        for level in range(a.level + 1):
            out += routing.contacts_for_level(self.config, account, a.concern, level)
        return out

    def next_escalation(self, account: AccountConfig, a: Alert, now: datetime) -> datetime | None:
        levels = routing.ladder(self.config, account, a.concern)
        if a.level + 1 < len(levels):
            return now + self.config.alerts.escalate_after
        return None
