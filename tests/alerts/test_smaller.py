"""Issue 10 "smaller things" and issue 11 low items on the alerts side."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import select
from typer.testing import CliRunner

from postwatch.alerts import channels, sheet
from postwatch.alerts.clock import ManualClock
from postwatch.alerts.engine import Engine
from postwatch.app import create_app
from postwatch.cli import app as cli_app
from postwatch.store import Database
from postwatch.store.events import record_event
from postwatch.store.models_alerts import Alert
from tests.alerts.conftest import WebhookSink, gym_config
from tests.alerts.test_http_cli import link_token, write_config
from tests.alerts.test_lifecycle import BOX, recover
from tests.alerts.test_noise import quota

DSN_SUBJECT = "Undelivered Mail Returned to Sender"


def held_lead(db: Database, clock: ManualClock, sub: str = "s1") -> None:
    """A lead held for the full mailbox and sent to the fallback, reported by a DSN."""
    full = {"reason": "mailbox_full", "status": "5.2.2", "permanent": True}
    with db.session() as s:
        at = clock.now()
        record_event(s, "mailbox_full", account="gym", mailbox=BOX, at=at,
                     data=full | {"evidence": DSN_SUBJECT,
                                  "diagnostic": "552 5.2.2 Mailbox quota exceeded"})
        record_event(s, "delivery_failed", account="gym", mailbox=BOX, at=at,
                     data=full | {"mailbox": BOX, "evidence": DSN_SUBJECT,
                                  "diagnostic": "552 5.2.2 Mailbox quota exceeded",
                                  "original_message_id": f"<{sub}.0@forms.example>"})
        held = {"submission": sub, "job": 1, "recipient": BOX, "reason": "mailbox_full"}
        record_event(s, "delivery_held", account="gym", mailbox=BOX, at=at, data=held)
        record_event(s, "delivery_fallback", account="gym", mailbox=BOX, at=at,
                     data=held | {"fallback": ["owner@private.example"]})


async def test_ack_page_zone_cost_todo_and_real_evidence(
    db: Database, tmp_path: Path, sink: WebhookSink
) -> None:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    cfg = gym_config(tmp_path, sink, timezone="Asia/Tokyo",
                     responsibilities={"mailbox": ["webmaster"]})
    eng = Engine(cfg, db, clock=clock)
    held_lead(db, clock)
    eng.step()
    token = link_token(sink.to("webmaster")[0]["body"]["message"])  # Webbureau: no own zone
    transport = httpx.ASGITransport(app=create_app(cfg, db))
    async with httpx.AsyncClient(transport=transport, base_url="http://pw.test") as client:
        page = (await client.get(f"/alerts/ack/{token}")).text
    assert "(Asia/Tokyo)" in page and "(UTC)" not in page
    assert "What it costs" in page and "owner@private.example" in page
    assert "What to do" in page and "Delete or archive" in page
    assert "552 5.2.2 Mailbox quota exceeded" in page and DSN_SUBJECT not in page
    message = sink.to("webmaster")[0]["body"]["message"]
    assert DSN_SUBJECT not in message and "552 5.2.2" in message


def test_webhook_type_follows_severity_and_resolved_says_now_delivered(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink)
    eng = Engine(cfg, db, clock=clock)
    held_lead(db, clock)
    eng.step()
    assert sink.to("owner")[0]["body"]["type"] == "failure"  # not "info" for a CRITICAL
    clock.advance(timedelta(minutes=20))
    with db.session() as s:  # the held lead is delivered once the mailbox takes mail again
        record_event(s, "delivery_attempt", account="gym", mailbox=BOX, at=clock.now(),
                     data={"submission": "s1", "job": 1, "attempt": 3, "recipient": BOX,
                           "result": "delivered"})
    recover(db, clock)
    eng.step()
    clock.advance(timedelta(minutes=3))
    eng.step()
    resolved = sink.to("owner")[-1]["body"]
    assert resolved["title"].startswith("Opgelost") and resolved["type"] == "success"
    assert "nu bezorgd bij info@gym.example" in resolved["message"], resolved["message"]
    assert "doorgestuurd naar owner@private.example" in resolved["message"]


def test_site_name_is_used_and_the_sheet_names_the_fallback(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink, site_name="Sportschool website",
                     responsibilities={"site": ["owner"]})
    eng = Engine(cfg, db, clock=clock)
    site = str(tmp_path / "www")
    quota(db, clock, "quota_warning", "site", site, level=90, percent=92.0,
          used_bytes=138_000_000, limit_bytes=150_000_000)
    eng.step()
    assert "Sportschool website" in sink.titles("owner")[0]
    text = sheet.text_sheet(cfg, cfg.accounts[0])
    assert "owner@private.example" in text and "Sportschool website" in text
    assert "owner@private.example" in sheet.html_sheet(cfg, cfg.accounts[0])


def test_alerts_list_has_headers_and_zones_and_history_covers_every_account(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    path = write_config(tmp_path, db, [sink.url("owner")])
    from postwatch.config import load_config

    eng = Engine(load_config(path), db, clock=clock)
    held_lead(db, clock)
    eng.step()
    runner = CliRunner()
    out = runner.invoke(cli_app, ["alerts", "list", "-c", str(path)]).output
    assert "level 0" not in out and "SINCE (UTC)" in out and "TOLD UP TO" in out
    hist = runner.invoke(cli_app, ["alerts", "history", "-c", str(path)])
    assert hist.exit_code == 0, hist.output
    assert "gym #" in hist.output and "(UTC)" in hist.output


def test_secrets_in_webhook_paths_and_payload_params_are_masked() -> None:
    url = "json://hooks.example.com/hooks/S3cr3tPathT0kenABCDEF?-apikey=K3y&-note=xyzzy42"
    shown = channels.describe(url).masked
    assert "S3cr3tPathT0kenABCDEF" not in shown and "xyzzy42" not in shown, shown
    assert shown.startswith("json://hooks.example.com/hooks/")
    slack_like = channels.mask("https://example.com/services/T0123/B0456/abcDEF1234567890xyz")
    assert "abcDEF1234567890xyz" not in slack_like


async def test_api_ack_by_is_cleaned_big_ids_and_lowercase_bearer(
    db: Database, tmp_path: Path, sink: WebhookSink
) -> None:
    clock = ManualClock(datetime.now(UTC))
    path = write_config(tmp_path, db, [sink.url("owner")])
    from postwatch.config import load_config

    cfg = load_config(path)
    cfg.alerts.api_token = type(cfg.accounts[0].contacts[0].channels[0])("op-token-123456")
    eng = Engine(cfg, db, clock=clock)
    held_lead(db, clock)
    eng.step()
    with db.session(readonly=True) as s:
        alert_id = s.scalars(select(Alert.id)).one()
    transport = httpx.ASGITransport(app=create_app(cfg, db))
    auth = {"Authorization": "bearer op-token-123456"}  # the scheme in any case
    async with httpx.AsyncClient(transport=transport, base_url="http://pw.test") as client:
        assert (await client.get("/api/alerts", headers=auth)).status_code == 200
        for big in (2**63, 2**64 + 5):
            r = await client.post(f"/api/alerts/{big}/ack", headers=auth)
            assert r.status_code in (400, 404, 422), r.status_code
        r = await client.post(f"/api/alerts/{alert_id}/ack", headers=auth,
                              json={"by": "ops\x1b[2J\x1b]0;pwned\x07\r\nX-Evil: 1"})
        assert r.status_code == 200
    with db.session(readonly=True) as s:
        by = s.get(Alert, alert_id).acked_by  # type: ignore[union-attr]
    assert by is not None and "\x1b" not in by and "\x07" not in by and "\n" not in by
    out = CliRunner().invoke(cli_app, ["alerts", "list", "-c", str(path)]).output
    assert "\x1b" not in out and "ops" in out
    out = CliRunner().invoke(cli_app, ["alerts", "history", "-c", str(path)]).output
    assert "\x1b" not in out
    assert json.dumps(by)
