"""Acknowledge links: signed (itsdangerous), expiring, good for one thing only.

The token carries the alert id and the contact it was sent to; the signature uses the alerts
secret with a salt of its own, so a token made for anything else in postwatch does not verify
here, and an acknowledge token cannot be used for anything but acknowledging that alert.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from postwatch.config import Config
from postwatch.store.models_alerts import AlertState

SALT = "postwatch.alerts.ack.v1"


class LinkError(Exception):
    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class AckClaim:
    alert_id: int
    contact: str


def link_secret(config: Config, session: Session) -> str:
    """``alerts.secret`` from the config, else one made once and kept in the store."""
    if config.alerts.secret is not None:
        return config.alerts.secret.get_secret_value()
    row = session.get(AlertState, "link_secret")
    if row is None:
        ensure_state(session, "link_secret", secrets.token_urlsafe(32))
        row = session.get(AlertState, "link_secret", populate_existing=True)
        assert row is not None
    return row.value


def ensure_state(session: Session, key: str, value: str) -> None:
    """Insert a state row unless another process already did (no error on the race)."""
    table = AlertState
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        session.execute(pg_insert(table).values(key=key, value=value).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        session.execute(
            sqlite_insert(table).values(key=key, value=value).on_conflict_do_nothing()
        )


def _serializer(secret: str, now: datetime | None) -> URLSafeTimedSerializer:
    """A serializer whose timestamps come from ``now`` (the engine's clock) when given."""
    if now is None:
        return URLSafeTimedSerializer(secret, salt=SALT)
    stamp = int(now.timestamp())

    class _ClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return stamp

    signer: Any = _ClockSigner
    return URLSafeTimedSerializer(secret, salt=SALT, signer=signer)


def make_token(secret: str, alert_id: int, contact: str, now: datetime | None = None) -> str:
    return str(_serializer(secret, now).dumps({"a": alert_id, "c": contact}))


def read_token(
    secret: str, token: str, max_age: timedelta, now: datetime | None = None
) -> AckClaim:
    s = _serializer(secret, now)
    try:
        data = s.loads(token, max_age=int(max_age.total_seconds()))
    except SignatureExpired:
        raise LinkError("this acknowledge link has expired", expired=True) from None
    except BadSignature:
        raise LinkError("this acknowledge link is not valid") from None
    if not isinstance(data, dict) or not isinstance(data.get("a"), int):
        raise LinkError("this acknowledge link is not valid")
    return AckClaim(int(data["a"]), str(data.get("c") or "link"))


def ack_url(config: Config, token: str) -> str | None:
    base = config.alerts.public_url or config.server.public_url
    if not base:
        return None
    return f"{base.rstrip('/')}/alerts/ack/{token}"
