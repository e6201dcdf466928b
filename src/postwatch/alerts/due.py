"""Due work: what the persisted times say is due now, decided in the caller's transaction.

Auto-resolve alerts without a recovery event after ``alerts.resolve_after`` without news;
announce new alerts (unless held back, see ``suppression``), escalate to the next level after
``alerts.escalate_after`` without an acknowledgement (at once when every message failed),
remind every ``alerts.repeat_every``; collect low-severity alerts into each person's digest.
Each decision writes ``alert_notifications`` rows (an outbox) that ``dispatch`` sends. One alert
that raises is passed over in its savepoint (logged once); a store error stops the tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from postwatch.alerts import messages, routing, rules, schedule
from postwatch.alerts.clock import Clock
from postwatch.alerts.lifecycle import OPEN, Lifecycle, alert_event_data
from postwatch.alerts.notices import Notices, facts
from postwatch.alerts.suppression import BySubject, Suppression
from postwatch.alerts.suppression import by_subject as subjects_of
from postwatch.config import AccountConfig, Config, ContactConfig
from postwatch.store.events import EventKind, record_event
from postwatch.store.models_alerts import Alert, AlertNotification, AlertSilence, AlertState

log = logging.getLogger("postwatch.alerts")


class DueWork:
    def __init__(
        self,
        config: Config,
        clock: Clock,
        lifecycle: Lifecycle,
        suppression: Suppression,
        notices: Notices,
    ) -> None:
        self.config = config
        self.clock = clock
        self.lifecycle = lifecycle
        self.suppression = suppression
        self.notices = notices
        self._accounts = {a.id: a for a in config.accounts}
        #: digest times already handled (a cache of alert_state rows, saves a query a step)
        self._digest_done: dict[str, datetime] = {}
        #: alerts that raised (logged once each)
        self._broken: set[str] = set()

    def tick(self, s: Session) -> int:
        now = self.clock.now()
        work = 0
        open_alerts = list(s.scalars(select(Alert).where(Alert.state.in_(OPEN))))
        # auto-resolve what has no recovery event
        for a in open_alerts:
            quiet_since = a.last_seen_at + self.config.alerts.resolve_after
            if a.rule in rules.AUTO_RESOLVE and quiet_since <= now:
                self.lifecycle.resolve(s, a, now, facts={"auto": "no news"})
                work += 1
        open_alerts = [a for a in open_alerts if a.state in OPEN]
        by_subject = subjects_of(open_alerts)
        db_silences = self.suppression.silences(s, now)
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
        by_subject: BySubject,
        db_silences: list[AlertSilence],
        now: datetime,
    ) -> int:
        """Announce, escalate or remind one alert when due; returns the work done."""
        work = 0
        account = self._accounts.get(a.account)
        if account is None or a.state != "firing" or a.severity == "low":
            return 0
        if self.suppression.suppressed(a, by_subject, db_silences, now):
            return 0
        if not a.announced:
            for contact in self.lifecycle.told_up_to(account, a):
                self.notices.notify(s, a, account, contact, "fired", now)
            a.announced = True
            a.next_reminder_at = now + self.config.alerts.repeat_every
            a.next_escalation_at = self.lifecycle.next_escalation(account, a, now)
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
                self.notices.notify(s, a, account, contact, "escalated", now)
            record_event(
                s,
                EventKind.ALERT_ESCALATED,
                account=a.account,
                mailbox=a.subject if a.concern == "mailbox" else None,
                data=alert_event_data(a) | {"level": a.level},
                at=now,
            )
            a.next_escalation_at = self.lifecycle.next_escalation(account, a, now)
            work += 1
        if a.next_reminder_at is not None and a.next_reminder_at <= now:
            for contact in self.lifecycle.told_up_to(account, a):
                self.notices.notify(s, a, account, contact, "reminder", now)
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

    def _digests(
        self,
        s: Session,
        open_alerts: list[Alert],
        by_subject: BySubject,
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
            tz = self.notices.tz(first_contact)
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
                    if self.suppression.suppressed(a, by_subject, db_silences, now):
                        continue
                    full_at = self._full_at(a, by_subject)
                    items.append(messages.DigestItem(facts(self.config, s, a), full_at))
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
                    not_before=self.suppression.quiet_until(contact0, tz, "low", "digest", now)
                    or now,
                    rounds=0,
                    data=data,
                )
            )
            work += 1
        return work

    @staticmethod
    def _full_at(a: Alert, by_subject: BySubject) -> datetime | None:
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
