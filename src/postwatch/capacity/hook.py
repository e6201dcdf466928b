"""The client side of ``postwatch hook quota-warning`` (run by Dovecot's quota_warning script).

It posts to the running service (``server.listen``); when that cannot be reached it writes to
the store itself. Whatever happens it never blocks Dovecot for long (3 s HTTP timeout).

A wiring test (``--strict``, by hand) goes the same way but is no reading: it records one
``hook_test`` event (which no alert rule reads), changes no quota state and alerts nobody.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from sqlalchemy.orm import Session

from postwatch.config import Config
from postwatch.store import Database
from postwatch.store.events import EventKind, record_event
from postwatch.store.models import Event

#: the event kind of a wiring test (no alert rule reads it)
HOOK_TEST = EventKind.HOOK_TEST

HTTP_TIMEOUT = 3.0


@dataclass
class HookResult:
    ok: bool
    via: str  # "http" | "store" | "none"
    events: list[str]
    message: str


def service_url(config: Config) -> str:
    host = config.server.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}/capacity/hook/quota-warning"


def wiring_test(session: Session, config: Config, user: str, percent: float) -> Event:
    """Record that the hook reached postwatch, as a test: a ``hook_test`` event, nothing else
    (no reading, no quota state, no alert)."""
    from postwatch.capacity.core import find_mailbox

    found = find_mailbox(config, user)
    return record_event(
        session,
        HOOK_TEST,
        account=found[0].id if found else None,
        mailbox=found[1].address if found else None,
        data={"user": user, "percent": percent, "known": found is not None,
              "note": "wiring test: no reading recorded, nobody alerted"},
    )


def post(config: Config, user: str, percent: float, *, test: bool = False) -> HookResult:
    payload_out: dict[str, object] = {"user": user, "percent": percent}
    if test:
        payload_out["test"] = True
    body = json.dumps(payload_out).encode()
    req = urllib.request.Request(
        service_url(config), data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    token = config.capacity.hook_token
    if token is not None:
        req.add_header("Authorization", f"Bearer {token.get_secret_value()}")
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            payload = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return HookResult(False, "http", [], f"service answered HTTP {exc.code}")
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        text = getattr(reason, "strerror", None) or str(reason)
        return HookResult(False, "http", [], f"service not reachable: {text}")
    except ValueError:
        return HookResult(False, "http", [], "service answered something that is not JSON")
    return HookResult(True, "http", list(payload.get("events", [])), "posted to the service")


def store_directly(
    config: Config, db: Database, user: str, percent: float, *, test: bool = False
) -> HookResult:
    from postwatch.capacity.core import hook_warning

    with db.session() as s:
        if test:
            kinds = [wiring_test(s, config, user, percent).kind]
        else:
            kinds = [e.kind for e in hook_warning(s, config, user, percent)]
    return HookResult(True, "store", kinds, "written to the store")
