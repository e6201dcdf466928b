"""The seam to postwatch's own records: who was told what and when, quota history, sign-ups.

``investigate`` works from log files alone.  When the operator also gives ``--config``, the
store of that postwatch installation is read for the mailbox and the window, and the report
gains three sections: the notifications/alerts postwatch sent (the audit trail: "who was told
what, when"), the quota readings it recorded, and the sign-ups it took in for the mailbox, each
counted once with where it went (the mailbox, the fallback copy, both, nowhere yet, lost).

The rows are made for a hoster to hand to a client: times, people, channels and figures in
words; never the event's raw data (which holds internal file paths and ids). The functions
that turn rows into those sections are independent of the database, so they are tested with
plain rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from postwatch.forensics.model import SignUp

NOTIFICATION_KINDS = (
    "mailbox_full",
    "mailbox_recovered",
    "notification_sent",
    "notification_failed",
    "alert_opened",
    "alert_resolved",
    "alert_escalated",
    "digest_sent",
)
QUOTA_PREFIXES = ("quota_",)

_KIND_WORDS = {
    "mailbox_full": "postwatch saw the mailbox refuse mail as full",
    "mailbox_recovered": "the mailbox took mail again",
    "alert_fired": "alert raised",
    "alert_opened": "alert raised",
    "alert_escalated": "alert escalated to the next person",
    "alert_acknowledged": "alert acknowledged",
    "alert_resolved": "alert resolved",
    "digest_sent": "daily summary sent",
    "quota_warning": "above its warning level",
    "quota_full": "full",
    "quota_ok": "back under its warning levels",
    "forecast_full": "expected to be full soon",
    "quota_reading": "reading",
}


def _channel_kind(channel: object) -> str:
    """``mailto://o***@gym.example`` -> ``e-mail``; ``json://...`` -> ``webhook``."""
    scheme = str(channel or "").partition("://")[0].lower()
    if not scheme:
        return "-"
    if scheme in ("mailto", "mailtos"):
        return "e-mail"
    if scheme in ("json", "jsons", "form", "forms", "xml", "xmls", "http", "https"):
        return "webhook"
    return scheme


def _size(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    n = float(value)
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"  # pragma: no cover


def told_row(kind: str, at: str, data: Mapping[str, Any]) -> dict[str, str]:
    """One row of "Who was told what, and when": when, who, how, what (all plain text)."""
    who = "-"
    how = "-"
    if kind.startswith("notification_"):
        contact = str(data.get("contact") or "-")
        role = data.get("role")
        who = f"{contact} ({role})" if role else contact
        how = _channel_kind(data.get("channel"))
        message = str(data.get("message") or "").strip()
        if kind == "notification_sent":
            what = f"told: {message}" if message else "told"
        else:
            error = str(data.get("error") or "unknown error")[:200]
            what = ("gave up telling" if data.get("final") else "could not tell") + \
                f" ({error})" + (f": {message}" if message else "")
    elif kind.startswith("alert_"):
        what = _KIND_WORDS.get(kind, kind.replace("_", " "))
        bits = [str(data[k]) for k in ("severity", "concern") if data.get(k)]
        if bits:
            what += f" ({', '.join(bits)})"
        if data.get("by"):
            who = str(data["by"])
        if data.get("via"):
            how = str(data["via"])
    elif kind == "mailbox_recovered":
        failures = data.get("failures")
        what = _KIND_WORDS[kind] + (f" after {failures} refusals" if failures else "")
    else:
        what = _KIND_WORDS.get(kind, kind.replace("_", " "))
    return {"at": at, "kind": kind, "who": who, "how": how, "what": what}


def quota_row(kind: str, at: str, data: Mapping[str, Any]) -> dict[str, str]:
    """One row of "Quota readings": when, used, limit, percent, what."""
    pct = data.get("percent")
    used = data.get("used_bytes")
    limit = data.get("limit_bytes")
    if used is None and isinstance(data.get("used_kib"), int | float):
        used = data["used_kib"] * 1024
    if limit is None and isinstance(data.get("limit_kib"), int | float):
        limit = data["limit_kib"] * 1024
    if pct is None and isinstance(used, int | float) and isinstance(limit, int | float) and limit:
        pct = 100 * used / limit
    what = _KIND_WORDS.get(kind, kind.replace("_", " "))
    if kind == "quota_warning" and data.get("level") is not None:
        what = f"above {data['level']}%"
    if kind == "quota_source_failed":
        what = "could not be read"
    return {
        "at": at, "kind": kind, "used": _size(used), "limit": _size(limit),
        "percent": f"{float(pct):.0f}%" if isinstance(pct, int | float) else "-", "what": what,
    }


def history_from_events(
    rows: Iterable[Mapping[str, Any]], *, mailbox: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split event rows (``event_dict`` shape: id, at, kind, account, mailbox, form, data) into
    (who was told what, quota readings) about ``mailbox``, oldest first, as table rows
    (:func:`told_row`, :func:`quota_row`)."""
    mb = mailbox.lower()
    notes: list[dict[str, Any]] = []
    quota: list[dict[str, Any]] = []
    for row in rows:
        kind = str(row.get("kind", ""))
        data = row.get("data") or {}
        row_mb = (row.get("mailbox") or data.get("mailbox") or "").lower()
        if row_mb and row_mb != mb:
            continue
        at = str(row.get("at", ""))
        if kind.startswith(QUOTA_PREFIXES):
            quota.append(quota_row(kind, at, data))
        elif kind in NOTIFICATION_KINDS or kind.startswith(("alert_", "notification_")):
            notes.append(told_row(kind, at, data))
    notes.sort(key=lambda r: r["at"])
    quota.sort(key=lambda r: r["at"])
    return notes, quota


_CREDENTIALS = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def mask(text: str) -> str:
    """Hide the password of any URL in ``text`` (``scheme://user:***@host``)."""
    return _CREDENTIALS.sub(r"\1***@", text)


def _aware(t: datetime | None) -> datetime | None:
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def signup_from_row(row: Mapping[str, Any], *, mailbox: str) -> SignUp:
    """One sign-up from a plain row: submission, received_at, form, jobs (each: recipient,
    role, state, delivered_at, last_reason). Counted once, with where it went."""
    mb = mailbox.lower()
    jobs = list(row.get("jobs") or ())
    mine = [j for j in jobs if j.get("role") == "primary" and str(j.get("recipient")).lower() == mb]
    copies = sorted(str(j["recipient"]) for j in jobs
                    if j.get("role") == "fallback" and j.get("state") == "delivered")
    reached = next((_aware(j.get("delivered_at")) for j in mine if j.get("state") == "delivered"),
                   None)
    got_it = any(j.get("state") == "delivered" for j in mine)
    if got_it:
        where = "both" if copies else "primary"
    elif copies:
        where = "fallback"
    elif all(j.get("state") in ("delivered", "failed", "cancelled") for j in jobs):
        where = "lost"
    else:
        where = "waiting"
    reason = None if got_it else next((j.get("last_reason") for j in mine), None)
    received = _aware(row.get("received_at"))
    assert received is not None
    return SignUp(submission=str(row["submission"]), received=received,
                  form=str(row.get("form", "")), where=where, reached_mailbox=reached,
                  copies=copies, last_reason=reason)


@dataclass
class StoreRecords:
    """What ``--config`` adds: event rows of the mailbox and its sign-ups, oldest first."""

    events: list[dict[str, Any]] = field(default_factory=list)
    signups: list[SignUp] = field(default_factory=list)


def load_store_records(
    config_path: Path, *, mailbox: str, since: datetime | None, until: datetime | None
) -> StoreRecords:
    """Events and sign-ups of the mailbox from the installation configured in ``config_path``.

    Raises ``RuntimeError`` with a message for a person when the config or database is unusable.
    """
    try:
        from sqlalchemy import select

        from postwatch.config import ConfigError, load_config
        from postwatch.store import StoreUnavailable, database_from_config
        from postwatch.store.events import event_dict, fetch_events
        from postwatch.store.models import DeliveryJob, Submission
    except ImportError as exc:  # pragma: no cover - the store is part of the package
        raise RuntimeError(f"postwatch's event store is not available: {exc}") from None
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        raise RuntimeError(str(exc)) from None
    db = database_from_config(cfg)
    mb = mailbox.strip().lower()
    try:
        with db.session(readonly=True) as s:
            rows = fetch_events(s, mailbox=mb, since=since, until=until, limit=None)
            events = [event_dict(e) for e in rows]
            q = (
                select(Submission)
                .join(DeliveryJob, DeliveryJob.submission_id == Submission.id)
                .where(DeliveryJob.role == "primary", DeliveryJob.recipient == mb,
                       Submission.status != "spam")
            )
            if since is not None:
                q = q.where(Submission.received_at >= since)
            if until is not None:
                q = q.where(Submission.received_at < until)
            subs = list(s.scalars(q.order_by(Submission.received_at, Submission.id)).unique())
            jobs: dict[str, list[dict[str, Any]]] = {}
            ids = [sub.id for sub in subs]
            for i in range(0, len(ids), 500):
                for j in s.scalars(
                    select(DeliveryJob).where(DeliveryJob.submission_id.in_(ids[i:i + 500]))
                ):
                    jobs.setdefault(j.submission_id, []).append({
                        "recipient": j.recipient, "role": j.role, "state": j.state,
                        "delivered_at": j.delivered_at, "last_reason": j.last_reason,
                    })
            signups = [
                signup_from_row({"submission": sub.id, "received_at": sub.received_at,
                                 "form": f"{sub.account}/{sub.form}",
                                 "jobs": jobs.get(sub.id, [])}, mailbox=mb)
                for sub in subs
            ]
            return StoreRecords(events=events, signups=signups)
    except StoreUnavailable as exc:
        raise RuntimeError(mask(f"database unavailable: {exc}")) from None
    except Exception as exc:  # e.g. an empty database without the schema
        raise RuntimeError(mask(f"cannot read postwatch's records: {exc}")) from None
