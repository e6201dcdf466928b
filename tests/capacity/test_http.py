from __future__ import annotations

from pathlib import Path

import httpx

from postwatch.app import create_app
from postwatch.store import Database
from postwatch.store.events import fetch_events
from tests.capacity.helpers import capacity_config

URL = "/capacity/hook/quota-warning"
BODY = {"user": "info@gym.example", "percent": 95}


def client(app: object, host: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 40000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://postwatch")


async def test_loopback_only_without_a_token(db: Database, tmp_path: Path) -> None:
    app = create_app(capacity_config(tmp_path), db)
    async with client(app, "203.0.113.7") as c:
        assert (await c.post(URL, json=BODY)).status_code == 403
    async with client(app, "127.0.0.1") as c:
        proxied = await c.post(URL, json=BODY, headers={"X-Forwarded-For": "203.0.113.7"})
        assert proxied.status_code == 403
        ok = await c.post(URL, json=BODY)
        assert ok.status_code == 200 and ok.json()["events"] == ["quota_warning"]
        again = await c.post(URL, json=BODY)
        assert again.json()["events"] == []
        bad = await c.post(URL, json={"user": "a\r\nb", "percent": 95})
        assert bad.status_code == 422
        assert (await c.post(URL, json={"user": "x@y.z", "percent": -1})).status_code == 422
    with db.session(readonly=True) as s:
        evs = fetch_events(s, kinds=["quota_warning"])
    assert len(evs) == 1 and evs[0].account == "gym"


async def test_token_is_required_when_configured(db: Database, tmp_path: Path) -> None:
    app = create_app(capacity_config(tmp_path, hook_token="tok-123"), db)
    async with client(app, "127.0.0.1") as c:
        assert (await c.post(URL, json=BODY)).status_code == 403
        wrong = await c.post(URL, json=BODY, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
    async with client(app, "198.51.100.4") as c:
        ok = await c.post(URL, json=BODY, headers={"Authorization": "Bearer tok-123"})
        assert ok.status_code == 200


async def test_unknown_user_is_recorded_without_an_account(db: Database, tmp_path: Path) -> None:
    app = create_app(capacity_config(tmp_path), db)
    async with client(app, "::1") as c:
        res = await c.post(URL, json={"user": "stranger@else.example", "percent": 80})
    assert res.status_code == 200
    with db.session(readonly=True) as s:
        ev = fetch_events(s, kinds=["quota_warning"])[0]
    assert ev.account is None and ev.mailbox == "stranger@else.example"


async def test_a_wiring_test_is_no_reading(db: Database, tmp_path: Path) -> None:
    app = create_app(capacity_config(tmp_path), db)
    async with client(app, "127.0.0.1") as c:
        res = await c.post(URL, json=BODY | {"test": True})
        assert res.status_code == 200 and res.json()["events"] == ["hook_test"]
        assert (await c.post(URL, json=BODY)).json()["events"] == ["quota_warning"]
    with db.session(readonly=True) as s:
        assert len(fetch_events(s, kinds=["quota_warning"])) == 1


async def test_behind_a_proxy_the_token_is_required(db: Database, tmp_path: Path) -> None:
    """A proxy on the same host turns "loopback" into "anyone" (issue 11)."""
    from postwatch.capacity.checks import check

    cfg = capacity_config(tmp_path, mailboxes=[{"address": "info@gym.example",
                                                "quota": {"source": "maildir",
                                                          "path": str(tmp_path)}}])
    cfg.server.trusted_proxies = ["127.0.0.1"]
    app = create_app(cfg, db)
    async with client(app, "127.0.0.1") as c:
        assert (await c.post(URL, json=BODY)).status_code == 403
    assert any("hook_token" in p and "trusted_proxies" in p for p in check(cfg))
    with_token = capacity_config(tmp_path, hook_token="tok-123")
    with_token.server.trusted_proxies = ["127.0.0.1"]
    async with client(create_app(with_token, db), "127.0.0.1") as c:
        ok = await c.post(URL, json=BODY, headers={"Authorization": "BEARER tok-123"})
        assert ok.status_code == 200
    assert not any("hook_token" in p for p in check(with_token))
