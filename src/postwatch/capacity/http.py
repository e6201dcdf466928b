"""HTTP route for Dovecot's quota_warning hook: ``POST /capacity/hook/quota-warning``.

Accepted from loopback only (and never through a proxy: a request carrying forwarding headers is
refused), or from anywhere with ``Authorization: Bearer <capacity.hook_token>`` when a token is
configured (then the token is always required). When a proxy is configured
(``server.trusted_proxies``) the token is required too: a proxy on the same host makes every
visitor a loopback peer, so without a token the route refuses everything (check-config says so).
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from postwatch.capacity.core import hook_warning
from postwatch.capacity.hook import wiring_test
from postwatch.config import Config
from postwatch.store import Database

FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


class QuotaWarning(BaseModel):
    user: str = Field(min_length=1, max_length=320, pattern=r"^[^\s\x00-\x1f\x7f]+$")
    percent: float = Field(ge=0, le=1000)
    #: a wiring test (``hook quota-warning --strict``): recorded as ``hook_test``, no reading
    test: bool = False


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def authorised(config: Config, request: Request) -> bool:
    token = config.capacity.hook_token
    if token is not None:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.get_secret_value().encode()
        )
    if config.server.trusted_proxies:
        return False  # behind a proxy, loopback proves nothing: the token is required
    if any(h in request.headers for h in FORWARDING_HEADERS):
        return False
    return _is_loopback(request.client.host if request.client else None)


def routes(config: Config, db: Database) -> APIRouter:
    router = APIRouter(tags=["capacity"])

    @router.post("/capacity/hook/quota-warning")
    def quota_warning(body: QuotaWarning, request: Request) -> dict[str, object]:
        if not authorised(config, request):
            raise HTTPException(
                status_code=403,
                detail=(
                    "quota-warning hook: a valid bearer token (capacity.hook_token), or "
                    "loopback without a configured proxy"
                ),
            )
        with db.session() as s:
            if body.test:
                return {"ok": True, "events": [wiring_test(s, config, body.user,
                                                           body.percent).kind], "test": True}
            events = hook_warning(s, config, body.user, body.percent)
            kinds = [e.kind for e in events]
        return {"ok": True, "events": kinds}

    return router
