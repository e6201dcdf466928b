"""Notices: the facts a message about an alert is made of, read from the store.

``facts(config, session, alert)`` gathers, without writing anything: the alert's own fields and
newest event facts, the distinct sign-ups it is about, what it costs (sign-ups for the mailbox
held or sent to the fallback since the alert began, and how many of them have been delivered
since), and for a quota alert the latest real reading with its time. The messages, the ack page
and the digests all render these facts (``messages``), so they say the same thing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from postwatch.alerts import links, messages, routing, rules
from postwatch.alerts.suppression import Suppression
from postwatch.config import AccountConfig, Config, ContactConfig
from postwatch.store.events import fetch_events
from postwatch.store.models_alerts import Alert, AlertNotification
from postwatch.store.models_capacity import CapacityReading

#: events that say a sign-up for a mailbox was held back or sent to the fallback
HELD_KINDS = ("delivery_held", "delivery_fallback")
#: events that say a mail reached its recipient
DELIVERED_KINDS = ("delivery_attempt", "delivery_confirmed")


def facts(config: Config, s: Session, a: Alert) -> messages.AlertFacts:
    account = next((acc for acc in config.accounts if acc.id == a.account), None)
    f = messages.AlertFacts(
        id=a.id,
        rule=a.rule,
        concern=a.concern,
        subject=a.subject,
        account_id=a.account,
        account_name=account.name if account else None,
        severity=a.severity,
        started_at=a.started_at,
        count=a.count,
        data=dict(a.data or {}),
        fingerprint=a.fingerprint,
        resolved_at=a.resolved_at,
        acked_by=a.acked_by,
        acked_at=a.acked_at,
        signups=rules.signups(a.data),
        subject_name=subject_name(config, a),
    )
    if a.concern == "mailbox":
        cost(s, a, f)
    if a.rule == "quota":
        latest_reading(s, a, f)
    return f


def subject_name(config: Config, a: Alert) -> str | None:
    """A site's configured ``name`` (``[[accounts.sites]] name``), for the site's alerts."""
    if a.concern != "site":
        return None
    for acc in config.accounts:
        if acc.id != a.account:
            continue
        for site in acc.sites:
            if str(site.root) == a.subject:
                return getattr(site, "name", None) or None
    return None


def latest_reading(s: Session, a: Alert, f: messages.AlertFacts) -> None:
    """The figure of a quota message is the latest real reading, with its time: a reading
    newer than the event that opened or grew the alert replaces the event's figures."""
    subject = "mailbox" if a.concern == "mailbox" else "site"
    row = s.scalar(
        select(CapacityReading)
        .where(
            CapacityReading.subject == subject,
            CapacityReading.name == a.subject,
            CapacityReading.error.is_(None),
            CapacityReading.used_bytes.is_not(None),
            CapacityReading.limit_bytes.is_not(None),
        )
        .order_by(CapacityReading.at.desc(), CapacityReading.id.desc())
        .limit(1)
    )
    if row is None or not row.limit_bytes:
        return
    stated = messages.parse_time(f.data.get("read_at"))
    if stated is not None and row.at < stated:
        return
    f.data.update(
        percent=100.0 * float(row.used_bytes or 0) / float(row.limit_bytes),
        used_bytes=row.used_bytes,
        limit_bytes=row.limit_bytes,
        read_at=row.at.isoformat(),
    )


def cost(s: Session, a: Alert, f: messages.AlertFacts) -> None:
    """Sign-ups for this mailbox held or sent to the fallback since the alert began, and how
    many of them reached the mailbox since (each sign-up once)."""
    since = a.started_at - timedelta(minutes=10)
    evs = fetch_events(s, kinds=HELD_KINDS, account=a.account, since=since, limit=20000)
    subs: set[str] = set()
    fallback: list[str] = []
    first: datetime | None = None
    for ev in evs:
        if str(ev.data.get("recipient") or ev.mailbox or "").lower() != a.subject:
            continue
        subs.add(str(ev.data.get("submission") or ev.id))
        first = ev.at if first is None else min(first, ev.at)
        fb = ev.data.get("fallback") or []
        for addr in fb if isinstance(fb, list) else [fb]:
            if str(addr) not in fallback:
                fallback.append(str(addr))
    f.held, f.held_since, f.fallback = len(subs), first, fallback
    if not subs or first is None:
        return
    done: set[str] = set()
    for ev in fetch_events(s, kinds=DELIVERED_KINDS, mailbox=a.subject, since=first,
                           limit=20000):
        if ev.data.get("result") != "delivered":
            continue
        sub = str(ev.data.get("submission") or "")
        if sub in subs:
            done.add(sub)
    f.delivered = len(done)


class Notices:
    """Facts and the messages made of them: one ``alert_notifications`` row per person and
    kind, rendered in the person's language and time zone, not before the end of the person's
    quiet hours (only the start and the escalation of a critical alert break them), and a
    "resolved" message only after ``alerts.flap_hold`` (if it comes back, nobody is told)."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def facts(self, s: Session, a: Alert) -> messages.AlertFacts:
        return facts(self.config, s, a)

    def tz(self, contact: ContactConfig) -> str:
        return contact.timezone or self.config.alerts.timezone

    def notify(
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
        tz = self.tz(contact)
        secret = links.link_secret(self.config, s)
        token = links.make_token(secret, a.id, contact.name, now)
        url = links.ack_url(self.config, token)
        title, body = messages.render(
            facts(self.config, s, a),
            kind=kind,
            lang=contact.language,
            tz=tz,
            now=now,
            ack_url=url,
            ack_until=now + self.config.alerts.ack_link_ttl if url else None,
            role=contact.role,
            escalate_after=messages.fmt_duration(self.config.alerts.escalate_after),
        )
        not_before = now
        if kind == "resolved":  # wait a moment: if it comes back, nobody is told it is over
            not_before = now + self.config.alerts.flap_hold
        quiet_end = Suppression.quiet_until(contact, tz, a.severity, kind, now)
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
