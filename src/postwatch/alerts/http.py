"""HTTP: the acknowledge link (no login, acknowledges one alert, nothing else) and an API.

``GET /alerts/ack/{token}`` shows what would be acknowledged and a button; only the ``POST``
acknowledges (mail scanners that follow links must not acknowledge by opening them).
``/api/alerts`` needs ``Authorization: Bearer <alerts.api_token>``; without a configured token
the API answers 403.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException
from fastapi.responses import HTMLResponse

from postwatch.alerts import links, queries
from postwatch.alerts.engine import acknowledge
from postwatch.config import Config
from postwatch.store import Database
from postwatch.store.models_alerts import Alert

_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}}
button{{font-size:1.1em;padding:.5em 1.5em}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200, lang: str = "en") -> HTMLResponse:
    html = _PAGE.format(title=escape(title), body=body, lang=lang)
    return HTMLResponse(
        html,
        status_code=status,
        headers={"Cache-Control": "no-store", "X-Robots-Tag": "noindex"},
    )


def routes(config: Config, db: Database) -> APIRouter:
    router = APIRouter(tags=["alerts"])

    def claim(token: str) -> links.AckClaim:
        with db.session() as s:
            secret = links.link_secret(config, s)
        return links.read_token(secret, token, config.alerts.ack_link_ttl, datetime.now(UTC))

    def bad_link(exc: links.LinkError) -> HTMLResponse:
        return _page("Acknowledge", f"<p>{escape(str(exc))}.</p>", 410 if exc.expired else 400)

    @router.get("/alerts/ack/{token}", response_class=HTMLResponse)
    def ack_form(token: str) -> HTMLResponse:
        try:
            c = claim(token)
        except links.LinkError as exc:
            return bad_link(exc)
        with db.session(readonly=True) as s:
            a = s.get(Alert, c.alert_id)
            if a is None:
                return _page("Acknowledge", "<p>This alert no longer exists.</p>", 404)
            what = (
                f"<p>Alert {a.id}: <strong>{escape(a.rule)}</strong> for "
                f"<code>{escape(a.subject)}</code> (account {escape(a.account)}), "
                f"{escape(a.severity)}, {escape(a.state)}.</p>"
            )
        if a.state != "firing":
            return _page("Acknowledge", what + "<p>Nothing to do: it is no longer firing.</p>")
        form = (
            f'{what}<form method="post"><p>Acknowledging stops reminders and escalation for '
            f"this alert. It does nothing else.</p><button>Acknowledge</button></form>"
        )
        return _page("Acknowledge", form)

    @router.post("/alerts/ack/{token}", response_class=HTMLResponse)
    def ack_post(token: str) -> HTMLResponse:
        try:
            c = claim(token)
        except links.LinkError as exc:
            return bad_link(exc)
        with db.session() as s:
            res = acknowledge(
                s, c.alert_id, by=f"{c.contact} (link)", now=datetime.now(UTC), via="link"
            )
        status = 200 if res.ok else 404
        return _page("Acknowledge", f"<p>{escape(res.message)}.</p>", status)

    def authorise(authorization: str | None) -> None:
        token = config.alerts.api_token
        if token is None:
            raise HTTPException(403, "the alerts API is off: set alerts.api_token")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    @router.get("/api/alerts")
    def api_list(
        account: str | None = None,
        all: bool = False,
        authorization: Annotated[str | None, Header()] = None,
    ) -> list[dict[str, Any]]:
        authorise(authorization)
        with db.session(readonly=True) as s:
            return queries.list_alerts(s, account=account, include_resolved=all)

    @router.get("/api/alerts/history")
    def api_history(
        account: str, authorization: Annotated[str | None, Header()] = None
    ) -> list[dict[str, Any]]:
        authorise(authorization)
        with db.session(readonly=True) as s:
            return queries.history(s, account=account)

    @router.post("/api/alerts/{alert_id}/ack")
    def api_ack(
        alert_id: int,
        by: Annotated[str, Body(embed=True, max_length=200)] = "api",
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        authorise(authorization)
        with db.session() as s:
            res = acknowledge(s, alert_id, by=by, now=datetime.now(UTC), via="api")
        if not res.ok:
            raise HTTPException(404, res.message)
        return {"alert": alert_id, "message": res.message}

    return router
