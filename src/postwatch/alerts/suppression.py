"""Suppression: why an open alert's messages are held back now, and until when a person's
quiet hours delay one.

``suppressed``: in this order, inhibition (an open alert of a stronger rule on the same
subject, see ``rules.INHIBITS``), silences from the config, silences set at run time
(``alert_silences``), maintenance windows ('' when nothing holds it back). ``quiet_until``:
quiet hours delay a message (only the start and the escalation of a critical alert break
them). Pure reads; ``now`` is always the caller's (injected) clock.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from postwatch.alerts import rules, schedule
from postwatch.config import Config, ContactConfig
from postwatch.store.models_alerts import Alert, AlertSilence

OPEN = rules.OPEN

BySubject = dict[tuple[str, str, str], list[Alert]]


def by_subject(alerts: list[Alert]) -> BySubject:
    out: BySubject = {}
    for a in alerts:
        out.setdefault((a.account, a.concern, a.subject), []).append(a)
    return out


class Suppression:
    def __init__(self, config: Config) -> None:
        self.config = config

    def held_back(self, s: Session, now: datetime) -> dict[int, str]:
        """Open alerts whose notifications are held back now, and why."""
        open_alerts = list(s.scalars(select(Alert).where(Alert.state.in_(OPEN))))
        subjects = by_subject(open_alerts)
        db_silences = self.silences(s, now)
        out = {}
        for a in open_alerts:
            why = self.suppressed(a, subjects, db_silences, now)
            if why:
                out[a.id] = why
        return out

    @staticmethod
    def silences(s: Session, now: datetime) -> list[AlertSilence]:
        """The run-time silences that have not ended."""
        return list(s.scalars(select(AlertSilence).where(AlertSilence.ends > now)))

    @staticmethod
    def quiet_until(
        contact: ContactConfig, tz: str, severity: str, kind: str, now: datetime
    ) -> datetime | None:
        """The end of the contact's quiet hours when a message of ``kind`` must wait for it
        (None: send now). Only the start and the escalation of a critical alert break them;
        a digest (``severity`` "low") always waits."""
        if severity == "critical" and kind in ("fired", "escalated"):
            return None
        return schedule.quiet_until(contact.quiet_hours, tz, now)

    def suppressed(
        self,
        a: Alert,
        by_subject: BySubject,
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
