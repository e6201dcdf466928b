"""Read models of the alerts room: lists and the notification record (CLI, API, reports)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from postwatch.alerts import rules
from postwatch.store.models_alerts import Alert, AlertAttempt, AlertNotification


def alert_dict(a: Alert) -> dict[str, Any]:
    return {
        "id": a.id,
        "fingerprint": a.fingerprint,
        "account": a.account,
        "concern": a.concern,
        "subject": a.subject,
        "rule": a.rule,
        "severity": a.severity,
        "state": a.state,
        "count": a.count,
        "signups": rules.signups(a.data),
        "level": a.level,
        "started_at": a.started_at.isoformat(),
        "last_seen_at": a.last_seen_at.isoformat(),
        "resolved_at": a.resolved_at.isoformat() if a.resolved_at else None,
        "acked_at": a.acked_at.isoformat() if a.acked_at else None,
        "acked_by": a.acked_by,
        "next_reminder_at": a.next_reminder_at.isoformat() if a.next_reminder_at else None,
        "next_escalation_at": a.next_escalation_at.isoformat() if a.next_escalation_at else None,
        "data": {k: v for k, v in (a.data or {}).items() if not str(k).startswith("_")},
    }


def list_alerts(
    s: Session, *, account: str | None = None, include_resolved: bool = False, limit: int = 500
) -> list[dict[str, Any]]:
    q = select(Alert)
    if account is not None:
        q = q.where(Alert.account == account)
    if not include_resolved:
        q = q.where(Alert.state != "resolved")
    q = q.order_by(Alert.id.desc()).limit(limit)
    return [alert_dict(a) for a in s.scalars(q)]


def history(
    s: Session,
    *,
    account: str,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 2000,
) -> list[dict[str, Any]]:
    """Every notification about the account (digests included) with each channel attempt.

    Channels are stored masked; nothing here holds a secret.
    """
    q = (
        select(AlertNotification, Alert)
        .outerjoin(Alert, Alert.id == AlertNotification.alert_id)
        .where(or_(AlertNotification.account == account, AlertNotification.account.is_(None)))
    )
    if since is not None:
        q = q.where(AlertNotification.created_at >= since)
    if until is not None:
        q = q.where(AlertNotification.created_at < until)
    q = q.order_by(AlertNotification.id).limit(limit)
    out: list[dict[str, Any]] = []
    for n, a in s.execute(q).all():
        if n.account is None and account not in (n.data.get("accounts") or []):
            continue
        title, body = n.title, n.body
        if n.account is None:  # a digest over several accounts: only this account's part
            part = (n.data.get("per_account") or {}).get(account) or {}
            title = str(part.get("title") or f"digest ({account})")
            body = str(part.get("body") or "")
        attempts = s.scalars(
            select(AlertAttempt)
            .where(AlertAttempt.notification_id == n.id)
            .order_by(AlertAttempt.id)
        ).all()
        out.append(
            {
                "notification": n.id,
                "alert": n.alert_id,
                "fingerprint": a.fingerprint if a else None,
                "kind": n.kind,
                "contact": n.contact,
                "role": n.role,
                "language": n.language,
                "created_at": n.created_at.isoformat(),
                "sent_at": n.sent_at.isoformat() if n.sent_at else None,
                "state": n.state,
                "channel": n.channel,
                "error": n.error,
                "title": title,
                "message": body,
                "acked_at": a.acked_at.isoformat() if a and a.acked_at else None,
                "acked_by": a.acked_by if a else None,
                "attempts": [
                    {
                        "at": t.at.isoformat(),
                        "channel": t.channel,
                        "result": t.result,
                        "error": t.error,
                    }
                    for t in attempts
                ],
            }
        )
    return out
