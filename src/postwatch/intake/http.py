"""``POST /f/{form_id}``: the form endpoint. Stores durably, then answers.

Order of checks: the form exists (404), the origin is allowed (403), the address is under its
rate (429), the body has a known type (415), fits the limits (413) and parses (400). Then the
honeypot (a filled one answers like a success and stores the submission as spam), then the store
(group commit, fsync'd) and only then the reply: ``303`` to the form's redirect for browsers,
``201 {"id": ..., "status": "stored"}`` for clients that accept JSON. A store that cannot take the
submission gives ``503``: never a success for data that was not stored.

The route is a plain Starlette route (not a FastAPI one with validation) because it parses its
body itself, streaming, with the limits applied on the way.
"""

from __future__ import annotations

import html
import logging
import time
from typing import Any

from fastapi import APIRouter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from postwatch.config import AccountConfig, Config, FormConfig
from postwatch.intake import metrics
from postwatch.intake.committer import GroupCommitter
from postwatch.intake.parsing import IntakeError, Limits, Parsed, parse_body
from postwatch.intake.spam import (
    RateLimiter,
    allowed_set,
    client_ip,
    origin_allowed,
    parse_networks,
    request_origin,
)
from postwatch.intake.submissions import NewSubmission
from postwatch.store import StoreUnavailable

log = logging.getLogger("postwatch.intake")

IDEMPOTENCY_FIELD = "_idempotency_key"
_CORS_ALLOW_HEADERS = "Content-Type, Accept, Idempotency-Key, X-Requested-With"


class FormIndex:
    """Form lookup by ``form`` (when unique across accounts) or ``account/form``."""

    def __init__(self, config: Config) -> None:
        self.forms: dict[str, tuple[AccountConfig, FormConfig] | None] = {}
        for a in config.accounts:
            for f in a.forms:
                self.forms[f"{a.id}/{f.id}"] = (a, f)
                # None marks an id that several accounts use: only account/form works then
                self.forms[f.id] = None if f.id in self.forms else (a, f)

    def find(self, form_id: str) -> tuple[AccountConfig, FormConfig]:
        if form_id not in self.forms:
            raise IntakeError(404, "unknown_form", f"no form {form_id!r} here")
        found = self.forms[form_id]
        if found is None:
            raise IntakeError(
                404,
                "unknown_form",
                f"form id {form_id!r} is used by several accounts; post to /f/ACCOUNT/{form_id}",
            )
        return found


class Intake:
    def __init__(self, config: Config, db: Any) -> None:
        self.config = config
        self.db = db
        self.forms = FormIndex(config)
        self.limits = Limits.from_config(config.intake)
        self.limiter = RateLimiter(config.intake.rate_limit)
        self.trusted = parse_networks(config.server.trusted_proxies)
        self.committer = GroupCommitter(config, db, batch_max=config.intake.batch_max)
        self._origins: dict[str, set[str]] = {}

    def origins(self, account: AccountConfig, form: FormConfig) -> set[str]:
        key = f"{account.id}/{form.id}"
        if key not in self._origins:
            self._origins[key] = allowed_set(form.allowed_origins)
        return self._origins[key]

    # ------------------------------------------------------------------ POST

    async def post(self, request: Request) -> Response:
        started = time.perf_counter()
        wants_json = _accepts_json(request)
        cors: dict[str, str] = {}
        try:
            account, form = self.forms.find(request.path_params["form_id"])
            cors = self._check_origin(request, account, form)
            response = await self._accept(request, account, form, wants_json, cors)
        except IntakeError as exc:
            metrics.REJECTED.labels(exc.reason).inc()
            response = _error(exc, wants_json, {**cors, **exc.headers})
        metrics.LATENCY.observe(time.perf_counter() - started)
        return response

    def _check_origin(
        self, request: Request, account: AccountConfig, form: FormConfig
    ) -> dict[str, str]:
        allowed = self.origins(account, form)
        origin = request_origin(request.headers.get("origin"), request.headers.get("referer"))
        if not origin_allowed(allowed, origin):
            where = f"origin {origin}" if origin else "no Origin or Referer header"
            raise IntakeError(
                403,
                "origin",
                f"{where}: form {form.id!r} accepts submissions only from "
                + ", ".join(sorted(form.allowed_origins)),
            )
        return _cors_headers(request.headers.get("origin"))

    async def _accept(
        self,
        request: Request,
        account: AccountConfig,
        form: FormConfig,
        wants_json: bool,
        cors: dict[str, str],
    ) -> Response:
        peer = request.client.host if request.client else None
        remote = client_ip(peer, request.headers.get("x-forwarded-for"), self.trusted)
        wait = self.limiter.take(remote)
        if wait:
            raise IntakeError(
                429,
                "rate_limited",
                f"too many submissions from {remote}; retry in {wait} s",
                {"Retry-After": str(wait)},
            )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_body:
            raise IntakeError(
                413, "too_large", f"request body larger than {self.limits.max_body // 1024} KB"
            )
        try:
            parsed = await parse_body(
                request.headers.get("content-type"), request.stream(), self.limits
            )
        except ClientDisconnect:
            raise IntakeError(400, "malformed", "the client went away mid-body") from None
        wants_json = wants_json or parsed.is_json
        key = _idempotency_key(request.headers.get("idempotency-key"), parsed)
        honeypot = form.honeypot_field or self.config.intake.honeypot_field
        trap = parsed.fields.pop(honeypot, None) if honeypot else None
        spam = _filled(trap)
        new = NewSubmission(
            account=account,
            form=form,
            fields=dict(parsed.fields),
            files=parsed.files,
            remote_addr=remote[:64],
            user_agent=(request.headers.get("user-agent") or "")[:500] or None,
            idempotency_key=key,
            spam=spam,
            spam_reason="honeypot" if spam else None,
        )
        try:
            stored = await self.committer.submit(new)
        except StoreUnavailable as exc:
            log.error("store unavailable, submission to %s refused: %s", form.id, exc)
            raise IntakeError(
                503, "store_unavailable", "store unavailable: nothing was stored, please retry"
            ) from None
        except Exception:
            log.exception("the store refused a submission to %s", form.id)
            raise IntakeError(
                503, "store_unavailable", "the store refused it: nothing was stored, please retry"
            ) from None
        metrics.SUBMISSIONS.labels(
            "spam" if spam else ("stored" if stored.created else "duplicate")
        ).inc()
        headers = dict(cors)
        if not stored.created:
            headers["Idempotent-Replayed"] = "true"
        if wants_json:
            return JSONResponse({"id": stored.id, "status": "stored"}, 201, headers)
        if form.redirect:
            headers["Location"] = form.redirect
            return Response(status_code=303, headers=headers)
        return HTMLResponse(_THANKS.format(name=html.escape(form.name or form.id)), 200, headers)

    # ------------------------------------------------------------------ OPTIONS (CORS preflight)

    async def preflight(self, request: Request) -> Response:
        try:
            account, form = self.forms.find(request.path_params["form_id"])
            origin = request.headers.get("origin")
            if not origin_allowed(self.origins(account, form), request_origin(origin, None)):
                raise IntakeError(403, "origin", f"origin {origin} may not post to {form.id!r}")
        except IntakeError as exc:
            return _error(exc, True, {})
        headers = _cors_headers(origin)
        headers.update(
            {
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": _CORS_ALLOW_HEADERS,
                "Access-Control-Max-Age": "600",
            }
        )
        return Response(status_code=204, headers=headers)


_THANKS = (
    "<!doctype html><meta charset=utf-8><title>Thank you</title>"
    "<p>Thank you, your message to {name} was received.</p>"
)


def _cors_headers(origin: str | None) -> dict[str, str]:
    """CORS for a request whose origin passed the form's list (any origin when it has none)."""
    if not origin:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def _accepts_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    ctype = request.headers.get("content-type", "")
    return "application/json" in accept or ctype.split(";")[0].strip().lower().endswith("json")


def _filled(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, list):
        return any(v.strip() for v in value)
    return bool(str(value).strip())


def _idempotency_key(header: str | None, parsed: Parsed) -> str | None:
    hidden = parsed.fields.pop(IDEMPOTENCY_FIELD, None)
    if isinstance(hidden, list):
        hidden = hidden[0]
    key = (header or hidden or "").strip()
    if not key:
        return None
    if len(key) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise IntakeError(
            400, "malformed", "Idempotency-Key must be at most 200 printable characters"
        )
    return key


def _error(exc: IntakeError, wants_json: bool, headers: dict[str, str]) -> Response:
    headers = {**headers, "X-Content-Type-Options": "nosniff"}
    if wants_json:
        return JSONResponse({"error": exc.message}, exc.status, headers)
    return PlainTextResponse(exc.message + "\n", exc.status, headers)


def routes(config: Config, db: Any) -> APIRouter:
    intake = Intake(config, db)
    router = APIRouter()
    router.add_route("/f/{form_id:path}", intake.post, methods=["POST"], include_in_schema=False)
    router.add_route(
        "/f/{form_id:path}", intake.preflight, methods=["OPTIONS"], include_in_schema=False
    )
    router.intake = intake  # type: ignore[attr-defined]
    return router


__all__ = ["Intake", "routes"]
