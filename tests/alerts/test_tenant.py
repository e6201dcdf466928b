"""Per-account API tokens: a customer's token sees and acknowledges only its own account.

Two accounts with alerts and notifications (one digest covered both) in the real store, on
SQLite and PostgreSQL; the API through the real app.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from postwatch.alerts.checks import check
from postwatch.app import create_app
from postwatch.config import Config, ConfigError, config_from_dict
from postwatch.store import Database
from postwatch.store.models_alerts import Alert, AlertAttempt, AlertNotification
from tests.conftest import make_config

OPERATOR = "operator-0f1e2d3c4b5a69788796a5b4"
TOKEN_A = "bakery-7c3e9a1f5d2b8e4a6c0f"
TOKEN_B = "florist-2b9d4f6a8c1e3a5b7d9f"
T = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)


def setup(db: Database, tmp_path: Path, **alerts: Any) -> tuple[Config, dict[str, Any]]:
    """Accounts A and B (ids unique per test: the PostgreSQL database is shared), each with
    one firing alert and a notification, and one digest over both."""
    a, b = f"bakery{uuid.uuid4().hex[:8]}", f"florist{uuid.uuid4().hex[:8]}"
    section: dict[str, Any] = {"secret": "link-secret", "api_token": OPERATOR}
    section.update(alerts)
    cfg = make_config(
        tmp_path,
        accounts=[{"id": a, "api_token": TOKEN_A}, {"id": b, "api_token": TOKEN_B}],
        alerts=section,
    )
    ids: dict[str, Any] = {"a": a, "b": b}
    with db.session() as s:
        for key, acc in (("a", a), ("b", b)):
            alert = Alert(
                fingerprint=f"{acc}:mailbox:info@{acc}.example", account=acc,
                concern="mailbox", subject=f"info@{acc}.example", rule="mailbox_full",
                severity="critical", state="firing", started_at=T, last_seen_at=T,
                data={"evidence": f"to=<info@{acc}.example> status=bounced"},
            )
            s.add(alert)
            s.flush()
            ids[f"alert_{key}"] = alert.id
            n = AlertNotification(
                alert_id=alert.id, account=acc, contact=f"owner of {acc}",
                contact_key=f"{acc}/owner", role="owner", kind="fired", language="en",
                title=f"mailbox full at {acc}", body=f"info@{acc}.example is full",
                state="sent", created_at=T, not_before=T, sent_at=T,
                channel="json://127.0.0.1/****",
            )
            s.add(n)
            s.flush()
            s.add(AlertAttempt(notification_id=n.id, at=T, channel_index=0,
                               channel="json://127.0.0.1/****", result="sent"))
        # the hoster's digest that covered both accounts: each sees only its own part
        s.add(AlertNotification(
            alert_id=None, account=None, contact="Hoster ops", contact_key="ops@hoster.example",
            role="hoster", kind="digest", language="en",
            title=f"digest: {a}, {b}", body=f"DIGEST-A-{a} DIGEST-B-{b}",
            state="sent", created_at=T, not_before=T, sent_at=T,
            data={
                "alerts": [ids["alert_a"], ids["alert_b"]], "accounts": sorted([a, b]),
                "per_account": {
                    a: {"title": f"digest ({a})", "body": f"DIGEST-A-{a}"},
                    b: {"title": f"digest ({b})", "body": f"DIGEST-B-{b}"},
                },
            },
        ))
    return cfg, ids


def client(cfg: Config, db: Database) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(cfg, db))
    return httpx.AsyncClient(transport=transport, base_url="http://postwatch.test")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def state(db: Database, alert_id: int) -> str:
    with db.session(readonly=True) as s:
        a = s.get(Alert, alert_id)
        assert a is not None
        return a.state


async def test_account_token_sees_only_its_own_alerts_and_history(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg, ids = setup(db, tmp_path)
    a, b = ids["a"], ids["b"]
    c = client(cfg, db)
    texts: list[str] = []

    # the list: its own alerts only, with or without ?account=, resolved ones included or not
    for params in ({}, {"account": a}, {"all": "true"}):
        r = await c.get("/api/alerts", params=params, headers=bearer(TOKEN_A))
        assert r.status_code == 200, r.text
        texts.append(r.text)
        assert [x["id"] for x in r.json()] == [ids["alert_a"]]
        assert {x["account"] for x in r.json()} == {a}
        assert b not in r.text
    rows = (await c.get("/api/alerts", headers=bearer(TOKEN_B))).json()
    assert [x["id"] for x in rows] == [ids["alert_b"]]

    # another account by query parameter: 404, as for an account that does not exist
    other = await c.get("/api/alerts", params={"account": b}, headers=bearer(TOKEN_A))
    nowhere = await c.get("/api/alerts", params={"account": "nosuch"}, headers=bearer(TOKEN_A))
    assert other.status_code == nowhere.status_code == 404
    assert other.json()["detail"].replace(b, "X") == nowhere.json()["detail"].replace(
        "nosuch", "X")
    texts += [other.text, nowhere.text]

    # history: its own notifications and only its part of the digest over both accounts
    for params in ({}, {"account": a}):
        r = await c.get("/api/alerts/history", params=params, headers=bearer(TOKEN_A))
        assert r.status_code == 200, r.text
        texts.append(r.text)
        hist = r.json()
        assert [h["kind"] for h in hist] == ["fired", "digest"]
        assert hist[0]["alert"] == ids["alert_a"]
        assert hist[1]["message"] == f"DIGEST-A-{a}" and hist[1]["title"] == f"digest ({a})"
        assert b not in r.text and "DIGEST-B" not in r.text
    r = await c.get("/api/alerts/history", params={"account": b}, headers=bearer(TOKEN_A))
    assert r.status_code == 404 and "DIGEST" not in r.text
    hist_b = (await c.get("/api/alerts/history", headers=bearer(TOKEN_B))).json()
    assert [h["message"] for h in hist_b][-1] == f"DIGEST-B-{b}"
    assert a not in str(hist_b)

    # the operator token sees both
    r = await c.get("/api/alerts", headers=bearer(OPERATOR))
    seen = {x["id"] for x in r.json()}
    assert {ids["alert_a"], ids["alert_b"]} <= seen
    for acc, mine in ((a, "alert_a"), (b, "alert_b")):
        r = await c.get("/api/alerts", params={"account": acc}, headers=bearer(OPERATOR))
        assert [x["id"] for x in r.json()] == [ids[mine]]
        h = await c.get("/api/alerts/history", params={"account": acc}, headers=bearer(OPERATOR))
        assert [x["kind"] for x in h.json()] == ["fired", "digest"]
    assert (await c.get("/api/alerts/history", headers=bearer(OPERATOR))).status_code == 400

    for text in [*texts, caplog.text]:
        for token in (TOKEN_A, TOKEN_B, OPERATOR):
            assert token not in text


async def test_account_token_cannot_ack_another_accounts_alert(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg, ids = setup(db, tmp_path)
    c = client(cfg, db)
    r = await c.post(f"/api/alerts/{ids['alert_b']}/ack", json={"by": "bakery"},
                     headers=bearer(TOKEN_A))
    missing = await c.post("/api/alerts/987654321/ack", headers=bearer(TOKEN_A))
    assert r.status_code == missing.status_code == 404
    # the same answer as for an alert that does not exist (its existence is not revealed)
    assert r.json()["detail"] == f"no alert {ids['alert_b']}"
    assert missing.json()["detail"] == "no alert 987654321"
    assert state(db, ids["alert_b"]) == "firing"

    r = await c.post(f"/api/alerts/{ids['alert_a']}/ack", json={"by": "bakery"},
                     headers=bearer(TOKEN_A))
    assert r.status_code == 200 and "acknowledged by bakery" in r.json()["message"]
    assert state(db, ids["alert_a"]) == "acknowledged"
    assert state(db, ids["alert_b"]) == "firing"

    r = await c.post(f"/api/alerts/{ids['alert_b']}/ack", json={"by": "ops"},
                     headers=bearer(OPERATOR))
    assert r.status_code == 200 and state(db, ids["alert_b"]) == "acknowledged"
    for token in (TOKEN_A, TOKEN_B, OPERATOR):
        assert token not in caplog.text


async def test_missing_or_wrong_token_is_401(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg, ids = setup(db, tmp_path)
    c = client(cfg, db)
    wrong = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        bearer("nope"),
        bearer(TOKEN_A[:-1]),
        bearer(TOKEN_A + "x"),
        {"Authorization": TOKEN_A + TOKEN_B},
    ]
    for headers in wrong:
        for method, url in (
            ("GET", "/api/alerts"),
            ("GET", f"/api/alerts/history?account={ids['a']}"),
            ("POST", f"/api/alerts/{ids['alert_a']}/ack"),
        ):
            r = await c.request(method, url, headers=headers)
            assert r.status_code == 401, (method, url, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert TOKEN_A not in r.text and TOKEN_B not in r.text
    assert state(db, ids["alert_a"]) == "firing"
    for token in (TOKEN_A, TOKEN_B, OPERATOR):
        assert token not in caplog.text


async def test_account_tokens_without_operator_token(db: Database, tmp_path: Path) -> None:
    """Account tokens alone switch the API on; nothing then sees every account."""
    cfg, ids = setup(db, tmp_path, api_token=None)
    c = client(cfg, db)
    assert (await c.get("/api/alerts", headers=bearer(OPERATOR))).status_code == 401
    r = await c.get("/api/alerts", headers=bearer(TOKEN_B))
    assert [x["id"] for x in r.json()] == [ids["alert_b"]]


async def test_a_shared_token_is_refused_and_reported_without_printing_it(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    shared = "shared-token-5e6f7a8b9c0d1e2f"
    cfg = make_config(
        tmp_path,
        accounts=[
            {"id": "one", "api_token": shared},
            {"id": "two", "api_token": shared},
            {"id": "three", "api_token": "q7Zx"},
            {"id": "four", "api_token": OPERATOR},
            {"id": "five"},
        ],
        alerts={"api_token": OPERATOR},
    )
    problems = check(cfg)
    text = "\n".join(problems)
    assert any("accounts[one].api_token" in p and "accounts[two].api_token" in p
               and "same token" in p for p in problems), problems
    assert any("alerts.api_token" in p and "accounts[four].api_token" in p
               for p in problems), problems
    assert any(p.startswith("accounts[three].api_token: shorter") for p in problems)
    assert "five" not in text
    for token in (shared, OPERATOR, "q7Zx"):
        assert token not in text
    # the API does not guess whose a shared token is
    c = client(cfg, db)
    for token in (shared, OPERATOR):
        assert (await c.get("/api/alerts", headers=bearer(token))).status_code == 401
    assert "one, two" in caplog.text
    assert shared not in caplog.text and OPERATOR not in caplog.text


def test_account_token_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW_TEST_ACCOUNT_TOKEN", TOKEN_A)
    (tmp_path / "tok").write_text(TOKEN_B + "\n", encoding="utf-8")
    cfg = make_config(tmp_path, accounts=[
        {"id": "a", "api_token_env": "PW_TEST_ACCOUNT_TOKEN"},
        {"id": "b", "api_token_file": str(tmp_path / "tok")},
        {"id": "c"},
    ])
    tokens = [acc.api_token for acc in cfg.accounts]
    assert tokens[0] is not None and tokens[0].get_secret_value() == TOKEN_A
    assert tokens[1] is not None and tokens[1].get_secret_value() == TOKEN_B
    assert tokens[2] is None
    assert TOKEN_A not in repr(cfg) and TOKEN_B not in repr(cfg)
    for bad in (
        {"id": "a", "api_token": "x", "api_token_env": "PW_TEST_ACCOUNT_TOKEN"},
        {"id": "a", "api_token_env": "PW_TEST_NOT_SET_ANYWHERE"},
        {"id": "a", "api_token": "   "},
    ):
        with pytest.raises(ConfigError) as exc:
            config_from_dict({"accounts": [bad]}, tmp_path / "postwatch.toml")
        assert "api_token" in str(exc.value)
