"""The seam to postwatch's own records: who was told what and when, and quota history.

``investigate`` works from log files alone.  When the operator also gives ``--config``, the
event log of that postwatch installation is read for the mailbox and the window, and the report
gains two sections: the notifications/alerts postwatch sent (the audit trail: "who was told
what, when") and the quota readings it recorded.  The function that turns event rows into those
sections is independent of the database, so it is tested with plain rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

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


def history_from_events(
    rows: Iterable[Mapping[str, Any]], *, mailbox: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split event rows (``event_dict`` shape: id, at, kind, account, mailbox, form, data) into
    (notifications, quota readings) about ``mailbox``, oldest first."""
    mb = mailbox.lower()
    notes: list[dict[str, Any]] = []
    quota: list[dict[str, Any]] = []
    for row in rows:
        kind = str(row.get("kind", ""))
        data = row.get("data") or {}
        row_mb = (row.get("mailbox") or data.get("mailbox") or "").lower()
        if row_mb and row_mb != mb:
            continue
        item = {
            "at": str(row.get("at", "")),
            "kind": kind,
            "account": row.get("account"),
            "data": data,
        }
        if kind.startswith(QUOTA_PREFIXES):
            quota.append(item)
        elif kind in NOTIFICATION_KINDS or kind.startswith(("alert_", "notification_")):
            notes.append(item)
    notes.sort(key=lambda r: r["at"])
    quota.sort(key=lambda r: r["at"])
    return notes, quota


_CREDENTIALS = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def mask(text: str) -> str:
    """Hide the password of any URL in ``text`` (``scheme://user:***@host``)."""
    return _CREDENTIALS.sub(r"\1***@", text)


def load_event_rows(
    config_path: Path, *, mailbox: str, since: datetime | None, until: datetime | None
) -> list[dict[str, Any]]:
    """Event rows of the mailbox from the installation configured in ``config_path``.

    Raises ``RuntimeError`` with a message for a person when the config or database is unusable.
    """
    try:
        from postwatch.config import ConfigError, load_config
        from postwatch.store import StoreUnavailable, database_from_config
        from postwatch.store.events import event_dict, fetch_events
    except ImportError as exc:  # pragma: no cover - the store is part of the package
        raise RuntimeError(f"postwatch's event store is not available: {exc}") from None
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        raise RuntimeError(str(exc)) from None
    db = database_from_config(cfg)
    try:
        with db.session(readonly=True) as s:
            rows = fetch_events(s, mailbox=mailbox, since=since, until=until, limit=None)
            return [event_dict(e) for e in rows]
    except StoreUnavailable as exc:
        raise RuntimeError(mask(f"database unavailable: {exc}")) from None
    except Exception as exc:  # e.g. an empty database without the schema
        raise RuntimeError(mask(f"cannot read the event log: {exc}")) from None
