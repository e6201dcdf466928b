"""Dispatch: claim due notifications, send them through the contact's channels, record.

A notification is claimed with a conditional UPDATE (``pending``, or ``sending`` whose claim
ran out), so several processes never send one twice. Each contact's messages go out in order;
different contacts in parallel (a channel that hangs delays only its own contact). Channels are
tried in the contact's order, skipping any that would go through the broken path (the failing
mailbox's own server); every attempt, the channel's status and a ``notification_sent`` /
``notification_failed`` event are recorded; a failed round is retried with back-off up to
``alerts.send_attempts``. Sending happens outside any transaction; times from the injected clock.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from postwatch.alerts import channels as channels_mod
from postwatch.alerts import routing
from postwatch.alerts.clock import Clock
from postwatch.alerts.lifecycle import OPEN
from postwatch.config import AccountConfig, Config, ContactConfig
from postwatch.store import Database
from postwatch.store.events import EventKind, record_event
from postwatch.store.models_alerts import Alert, AlertAttempt, AlertChannel, AlertNotification

log = logging.getLogger("postwatch.alerts")

class Sender(Protocol):
    """Sends one message on one channel: (ok, masked error). ``severity`` is the alert's, or
    "resolved"."""

    def __call__(
        self, url: str, title: str, body: str, *, severity: str = ...
    ) -> tuple[bool, str | None]: ...
#: contacts served at the same time by one step
SEND_THREADS = 8


class Dispatch:
    def __init__(self, config: Config, db: Database, clock: Clock, sender: Sender) -> None:
        self.config = config
        self.db = db
        self.clock = clock
        self.sender = sender

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
            severity = "resolved" if n.kind == "resolved" else (
                alert.severity if alert is not None else "low"
            )
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
                ok, error = self.sender(url, n.title, n.body, severity=severity)
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
                channel_status(s, n.contact_key, index, masked, result == "sent", error, at)
                kind = (EventKind.NOTIFICATION_SENT if result == "sent"
                        else EventKind.NOTIFICATION_FAILED)
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
                    EventKind.NOTIFICATION_FAILED,
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


def channel_status(
    s: Session,
    key: str,
    index: int,
    masked: str,
    ok: bool,
    error: str | None,
    at: datetime,
) -> None:
    """Remember how a contact's channel did last (``alerts channels`` shows it)."""
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
