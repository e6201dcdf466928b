"""HTTP: the acknowledge link (no login, acknowledges one alert, nothing else) and an API.

``GET /alerts/ack/{token}`` shows what would be acknowledged and a button; only the ``POST``
acknowledges (mail scanners that follow links must not acknowledge by opening them).
``/api/alerts`` needs ``Authorization: Bearer <token>``: ``alerts.api_token`` (the operator,
every account) or an account's ``api_token`` (that account's alerts and history only; another
account's answers 404, as if it did not exist). Without any configured token the API answers 403.
"""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime
from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from postwatch.alerts import links, messages, notices, queries
from postwatch.alerts.lifecycle import acknowledge
from postwatch.alerts.messages import clean_text
from postwatch.config import Config
from postwatch.store import Database
from postwatch.store.models_alerts import Alert

log = logging.getLogger("postwatch.alerts.http")

#: ids are 64-bit signed integers in the store: a larger one names no alert (404, not a 500)
MAX_ID = 2**63

# The page: one column that fits a phone, a large button, nothing loaded from elsewhere
# (the Content-Security-Policy allows inline styles only: no scripts, no images, no frames).
_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
*{{box-sizing:border-box}}
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;font-size:17px;line-height:1.45;
color:#1d1d1f;background:#f2f3f5;margin:0;padding:1rem}}
main{{max-width:34rem;margin:1rem auto;background:#fff;border-radius:10px;padding:1.25rem;
box-shadow:0 1px 3px rgba(0,0,0,.12);overflow-wrap:anywhere}}
h1{{font-size:1.3rem;line-height:1.25;margin:.2rem 0 1rem}}
.tag{{display:inline-block;font-size:.8rem;font-weight:600;letter-spacing:.03em;
text-transform:uppercase;padding:.15rem .55rem;border-radius:1rem;background:#e5e7eb}}
.critical{{background:#fde2e1;color:#9b1c1c}} .warning{{background:#fef3c7;color:#854d0e}}
.ok{{background:#dcfce7;color:#166534}} .bad{{background:#fde2e1;color:#9b1c1c}}
dl{{margin:0 0 1rem}} dt{{font-size:.8rem;color:#555;margin-top:.7rem}} dd{{margin:0}}
code{{font-size:.8rem;background:#f4f4f5;padding:.1rem .25rem;border-radius:3px}}
.note{{color:#444}}
.done{{background:#ecfdf3;border:1px solid #86efac;border-radius:8px;padding:.8rem 1rem;
margin-bottom:1.2rem}} .done strong{{color:#166534;font-size:1.15rem}} .done p{{margin:.4rem 0 0}}
.small{{font-size:.8rem;color:#666}}
button{{display:block;width:100%;font:inherit;font-weight:600;color:#fff;background:#1f5fbf;
border:0;border-radius:8px;padding:.85rem 1rem;margin:1rem 0 .5rem;cursor:pointer}}
button:hover,button:focus{{background:#174a96}}
@media (min-width:40rem){{body{{padding:2rem}} main{{padding:2rem}}}}
</style></head>
<body><main>{body}</main></body></html>"""

#: Security headers of every page of the link: nothing cached, nothing indexed, no scripts,
#: forms post only back here, the page is never shown inside another site's frame.
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_L = {
    "en": {
        "page": "Acknowledge an alert",
        "state.firing": "Open",
        "state.acknowledged": "Acknowledged",
        "state.resolved": "Over",
        "explain": (
            "Acknowledging tells postwatch that someone is on it: it stops the reminders and "
            "stops the alert being passed on to the next person. It changes nothing else."
        ),
        "button": "Acknowledge",
        "done": "Acknowledged",
        "done_note": (
            "Thank you. No more reminders will be sent and nobody else will be told about this "
            "alert. You will get one message when it is over."
        ),
        "not_firing": "There is nothing more to do on this page.",
        "bad": "This link does not work",
        "bad_note": (
            "Use the link in the newest message about this alert, or ask your hoster to "
            "acknowledge it for you."
        ),
        "gone": "This alert no longer exists.",
        "count": "How much",
        "state": "State",
        "severity": "Severity",
    },
    "nl": {
        "page": "Melding bevestigen",
        "state.firing": "Open",
        "state.acknowledged": "Bevestigd",
        "state.resolved": "Voorbij",
        "explain": (
            "Bevestigen laat postwatch weten dat iemand ermee bezig is: er komen geen "
            "herinneringen meer en de melding gaat niet door naar de volgende persoon. Verder "
            "verandert er niets."
        ),
        "button": "Bevestigen",
        "done": "Bevestigd",
        "done_note": (
            "Dank u. Er komen geen herinneringen meer en niemand anders krijgt deze melding. "
            "U krijgt één bericht wanneer het voorbij is."
        ),
        "not_firing": "Op deze pagina is niets meer te doen.",
        "bad": "Deze link werkt niet",
        "bad_note": (
            "Gebruik de link in het nieuwste bericht over deze melding, of vraag uw hoster om "
            "hem voor u te bevestigen."
        ),
        "gone": "Deze melding bestaat niet meer.",
        "count": "Hoeveel",
        "state": "Status",
        "severity": "Ernst",
    },
}


def _page(title: str, body: str, status: int = 200, lang: str = "en") -> HTMLResponse:
    html = _PAGE.format(title=escape(title), body=body, lang=lang)
    return HTMLResponse(html, status_code=status, headers=dict(_HEADERS))


def _reader(config: Config, account_id: str, contact: str) -> tuple[str, str]:
    """(language, timezone) of the contact the link was sent to; English and the
    ``[alerts] timezone`` otherwise."""
    fallback = config.alerts.timezone
    try:
        account = config.account(account_id)
    except KeyError:
        return "en", fallback
    for c in account.contacts:
        if c.name == contact:
            lang = c.language if c.language in _L else "en"
            return lang, c.timezone or fallback
    return "en", fallback


def _describe(config: Config, s: Session, a: Alert, lang: str, tz: str) -> str:
    """The alert as a heading and a short list of facts (what it costs, what to do, the
    evidence), every value escaped. The facts are the ones the messages are made of."""
    t, m = _L[lang], messages.T[lang]
    f = notices.facts(config, s, a)
    try:
        args = messages.fmt_args(f, lang, tz)
        head = messages.clean_title(m.get(f"{a.rule}.title", a.rule).format(**args))
        head = head[:1].upper() + head[1:]
        what = m.get(f"{a.rule}.what", "").format(**args)
        todo = messages.todo_text(f, lang, tz) if a.state != "resolved" else ""
    except (KeyError, ValueError, IndexError):
        head, what, todo = a.rule, "", ""
    sev = a.severity if a.severity in ("critical", "warning") else ""
    state_cls = {"acknowledged": "ok", "resolved": "ok"}.get(a.state, sev)
    acct = f"{f.account_name} ({a.account})" if f.account_name else a.account
    rows = [
        (m["account"], escape(acct)),
        (m["address"], f"<code>{escape(a.subject)}</code>"),
        (m["since"], escape(messages.local(a.started_at, tz))),
        (t["count"], escape(messages.count_text(f, lang))),
    ]
    cost = messages.cost_text(f, lang, tz, datetime.now(UTC))
    if cost:
        rows.append((m["cost"], escape(cost)))
    if todo:
        rows.append((m["todo"], escape(todo)))
    evidence = messages.evidence_text(f.data)
    if evidence:
        rows.append((m["evidence"], f"<code>{escape(evidence)}</code>"))
    facts = "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return (
        f'<p><span class="tag {escape(sev)}">{escape(m.get(a.severity, a.severity))}</span> '
        f'<span class="tag {escape(state_cls)}">{escape(t.get("state." + a.state, a.state))}'
        f"</span></p>"
        f"<h1>{escape(head)}</h1>"
        + (f'<p class="note">{escape(what)}</p>' if what else "")
        + f"<dl>{facts}</dl>"
        + f'<p class="small">{escape(m["alert"])} {int(a.id)}</p>'
    )


def routes(config: Config, db: Database) -> APIRouter:
    router = APIRouter(tags=["alerts"])

    def claim(token: str) -> links.AckClaim:
        with db.session() as s:
            secret = links.link_secret(config, s)
        return links.read_token(secret, token, config.alerts.ack_link_ttl, datetime.now(UTC))

    def bad_link(exc: links.LinkError) -> HTMLResponse:
        t = _L["en"]
        body = (
            f"<h1>{escape(t['bad'])}</h1><p>{escape(str(exc)[:1].upper() + str(exc)[1:])}.</p>"
            f'<p class="note">{escape(t["bad_note"])}</p>'
        )
        return _page(t["bad"], body, 410 if exc.expired else 400)

    @router.get("/alerts/ack/{token}", response_class=HTMLResponse)
    def ack_form(token: str) -> HTMLResponse:
        try:
            c = claim(token)
        except links.LinkError as exc:
            return bad_link(exc)
        with db.session(readonly=True) as s:
            a = s.get(Alert, c.alert_id)
            if a is None:
                return _page(_L["en"]["page"], f"<h1>{escape(_L['en']['gone'])}</h1>", 404)
            lang, tz = _reader(config, a.account, c.contact)
            t = _L[lang]
            what = _describe(config, s, a, lang, tz)
            state = a.state
            done = ""
            if a.acked_by and a.acked_at:
                done = messages.T[lang]["acked_by"].format(
                    by=a.acked_by, at=messages.local(a.acked_at, tz)
                )
        if state != "firing":
            note = f"{done} " if state == "acknowledged" else ""
            return _page(t["page"], what + f'<p class="note">{escape(note + t["not_firing"])}</p>',
                         lang=lang)
        form = (
            f'{what}<form method="post"><button>{escape(t["button"])}</button></form>'
            f'<p class="small">{escape(t["explain"])}</p>'
        )
        return _page(t["page"], form, lang=lang)

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
        if not res.ok:
            return _page(_L["en"]["page"], f"<p>{escape(res.message)}.</p>", 404)
        with db.session(readonly=True) as s:
            a = s.get(Alert, c.alert_id)
            if a is None:
                return _page(_L["en"]["page"], f"<h1>{escape(_L['en']['gone'])}</h1>", 404)
            lang, tz = _reader(config, a.account, c.contact)
            t = _L[lang]
            what = _describe(config, s, a, lang, tz)
        body = (
            f'<div class="done" role="status"><strong>&#10003; {escape(t["done"])}</strong>'
            f'<p>{escape(t["done_note"])}</p>'
            f'<p class="small">{escape(res.message)}.</p></div>{what}'
        )
        return _page(t["done"], body, lang=lang)

    # Who may use the API: the operator (``alerts.api_token``, every account) and each account
    # with its own ``api_token`` (that account only). Tokens are compared in constant time and
    # never logged or echoed.
    operator = config.alerts.api_token
    account_tokens = [
        (acc.id, acc.api_token.get_secret_value().strip().encode())
        for acc in config.accounts
        if acc.api_token is not None
    ]

    def authorise(authorization: str | None) -> str | None:
        """The account the caller may see, or None for the operator (every account)."""
        if operator is None and not account_tokens:
            raise HTTPException(
                403, "the alerts API is off: set alerts.api_token or an account's api_token"
            )
        scheme, _, value = (authorization or "").strip().partition(" ")
        given = value.strip().encode() if scheme.lower() == "bearer" else b""
        is_operator = operator is not None and hmac.compare_digest(
            given, operator.get_secret_value().strip().encode()
        )
        # compare with every account token (no early exit), then decide
        matches = [acc for acc, tok in account_tokens if hmac.compare_digest(given, tok)]
        if given and is_operator and not matches:
            return None
        if given and not is_operator and len(matches) == 1:
            return matches[0]
        if given and (is_operator or matches):  # one token for several: whose is it?
            log.warning(
                "alerts API: a token is shared by %s; refused (see check-config)",
                ", ".join((["the operator"] if is_operator else []) + matches),
            )
        raise HTTPException(401, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})

    def scope(caller: str | None, account: str | None) -> str | None:
        """The account to show: an account token sees its own only (another one: 404)."""
        if caller is None:
            return account
        if account is not None and account != caller:
            raise HTTPException(404, f"no account {account}")
        return caller

    @router.get("/api/alerts")
    def api_list(
        account: str | None = None,
        all: bool = False,
        authorization: Annotated[str | None, Header()] = None,
    ) -> list[dict[str, Any]]:
        account = scope(authorise(authorization), account)
        with db.session(readonly=True) as s:
            return queries.list_alerts(s, account=account, include_resolved=all)

    @router.get("/api/alerts/history")
    def api_history(
        account: str | None = None, authorization: Annotated[str | None, Header()] = None
    ) -> list[dict[str, Any]]:
        account = scope(authorise(authorization), account)
        if account is None:
            raise HTTPException(400, "give the account: /api/alerts/history?account=ID")
        with db.session(readonly=True) as s:
            return queries.history(s, account=account)

    @router.post("/api/alerts/{alert_id}/ack")
    def api_ack(
        alert_id: int,
        by: Annotated[str, Body(embed=True, max_length=200)] = "api",
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        caller = authorise(authorization)
        if not 0 < alert_id < MAX_ID:
            raise HTTPException(404, f"no alert {alert_id}")
        by = clean_text(by) or "api"
        with db.session() as s:
            owner = s.scalar(select(Alert.account).where(Alert.id == alert_id))
            if caller is not None and owner != caller:
                # another account's alert looks exactly like one that does not exist
                raise HTTPException(404, f"no alert {alert_id}")
            res = acknowledge(s, alert_id, by=by, now=datetime.now(UTC), via="api")
        if not res.ok:
            raise HTTPException(404, res.message)
        return {"alert": alert_id, "message": res.message}

    return router
