"""The acknowledge link, the API, the CLI, check-config and the record (secrets masked)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from postwatch.alerts import links
from postwatch.alerts.checks import check
from postwatch.alerts.clock import ManualClock
from postwatch.alerts.engine import Engine
from postwatch.app import create_app
from postwatch.cli import app as cli_app
from postwatch.store import Database
from postwatch.store.events import fetch_events
from postwatch.store.models_alerts import Alert
from tests.alerts.conftest import SmtpSink, WebhookSink, closed_port, gym_config
from tests.alerts.test_lifecycle import burst


def fired(db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock, **kw: object
          ) -> tuple[Engine, int]:
    cfg = gym_config(tmp_path, sink, **kw)  # type: ignore[arg-type]
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 3)
    eng.step()
    with db.session(readonly=True) as s:
        return eng, s.scalars(select(Alert.id)).one()


def client_for(eng: Engine, db: Database) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(eng.config, db))
    return httpx.AsyncClient(transport=transport, base_url="http://postwatch.test")


def link_token(message: str) -> str:
    url = next(w for w in message.split() if "/alerts/ack/" in w)
    return url.rsplit("/", 1)[1]


async def test_ack_link_from_the_message_works_without_login(
    db: Database, tmp_path: Path, sink: WebhookSink
) -> None:
    clock = ManualClock(datetime.now(UTC))
    eng, alert_id = fired(db, tmp_path, sink, clock)
    token = link_token(sink.to("owner")[0]["body"]["message"])
    client = client_for(eng, db)
    page = await client.get(f"/alerts/ack/{token}")
    assert page.status_code == 200 and "<form method=\"post\">" in page.text
    with db.session(readonly=True) as s:
        assert s.get(Alert, alert_id).state == "firing"  # type: ignore[union-attr]
    done = await client.post(f"/alerts/ack/{token}")
    assert done.status_code == 200 and "acknowledged by Marieke (link)" in done.text
    with db.session(readonly=True) as s:
        a = s.get(Alert, alert_id)
        assert a is not None and a.state == "acknowledged"
        ev = fetch_events(s, kinds=["alert_acknowledged"])
        assert ev[0].data["by"] == "Marieke (link)" and ev[0].data["via"] == "link"
    clock.advance(timedelta(hours=5))
    eng.step()
    assert len(sink.requests) == 1  # no escalation, no reminder


async def test_ack_link_tampered_or_expired_does_nothing(
    db: Database, tmp_path: Path, sink: WebhookSink
) -> None:
    clock = ManualClock(datetime.now(UTC))
    eng, alert_id = fired(db, tmp_path, sink, clock, ack_link_ttl="7d")
    client = client_for(eng, db)
    token = link_token(sink.to("owner")[0]["body"]["message"])
    _payload, stamp, sig = token.split(".")
    other = links.make_token("test-secret-for-links", alert_id + 1, "Marieke")
    forged = other.split(".")[0] + "." + stamp + "." + sig  # another alert, same signature
    for bad in (forged, token[:-3] + "abc", "x" + token, "nonsense"):
        r = await client.post(f"/alerts/ack/{bad}")
        assert r.status_code == 400 and "not valid" in r.text
    wrong_key = links.make_token("another-secret", alert_id, "Marieke")
    assert (await client.post(f"/alerts/ack/{wrong_key}")).status_code == 400
    old = links.make_token("test-secret-for-links", alert_id, "Marieke",
                           datetime.now(UTC) - timedelta(days=8))
    r = await client.post(f"/alerts/ack/{old}")
    assert r.status_code == 410 and "expired" in r.text
    with db.session(readonly=True) as s:
        assert s.get(Alert, alert_id).state == "firing"  # type: ignore[union-attr]
    # the link acknowledges and nothing else: no other method, no other path
    assert (await client.delete(f"/alerts/ack/{token}")).status_code == 405
    r = await client.get("/api/alerts", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403


async def test_api_needs_its_token(db: Database, tmp_path: Path, sink: WebhookSink,
                             clock: ManualClock) -> None:
    eng, alert_id = fired(db, tmp_path, sink, clock, api_token="api-secret-123")
    client = client_for(eng, db)
    assert (await client.get("/api/alerts")).status_code == 401
    r = await client.get("/api/alerts", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    auth = {"Authorization": "Bearer api-secret-123"}
    rows = (await client.get("/api/alerts", params={"account": "gym"}, headers=auth)).json()
    assert [r["id"] for r in rows] == [alert_id] and rows[0]["count"] == 3
    r = await client.post(f"/api/alerts/{alert_id}/ack", json={"by": "ops"}, headers=auth)
    assert r.status_code == 200
    assert (await client.post("/api/alerts/9999/ack", headers=auth)).status_code == 404
    hist = (await client.get("/api/alerts/history", params={"account": "gym"},
                         headers=auth)).json()
    assert hist[0]["acked_by"] == "ops"


SECRET_PW = "Sup3rS3cretPassw0rd"
SECRET_TOKEN = "tok_9f8e7d6c5b4a"


def test_secrets_never_in_history_events_or_logs(
    db: Database, tmp_path: Path, sink: WebhookSink, smtp: SmtpSink, clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = closed_port()
    owner = [
        f"mailto://marieke:{SECRET_PW}@127.0.0.1:{port}?to=m@private.example&from=pw@h.example",
        f"json://bot:{SECRET_PW}@127.0.0.1:{port}/hook?+X-Token={SECRET_TOKEN}",
        f"json://bot:{SECRET_PW}@127.0.0.1:{sink.port}/owner?+X-Token={SECRET_TOKEN}",
    ]
    cfg = gym_config(tmp_path, sink, owner_channels=owner)
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 2)
    eng.step()
    assert len(sink.to("owner")) == 1
    assert sink.to("owner")[0]["headers"].get("X-Token") == SECRET_TOKEN  # it was used...
    from postwatch.alerts.queries import history

    with db.session(readonly=True) as s:
        record = json.dumps(history(s, account="gym"))
        events = json.dumps([e.data for e in fetch_events(s)])
    assert [a["result"] for a in history_attempts(db)] == ["failed", "failed", "sent"]
    for text in (record, events, caplog.text):
        assert SECRET_PW not in text and SECRET_TOKEN not in text  # ...and never shown
    assert "****" in record
    runner = CliRunner()
    path = write_config(tmp_path, db, owner)
    out = runner.invoke(cli_app, ["alerts", "history", "--account", "gym", "-c", str(path)])
    assert out.exit_code == 0, out.output
    chans = runner.invoke(cli_app, ["alerts", "channels", "-c", str(path)])
    for text in (out.output, chans.output):
        assert SECRET_PW not in text and SECRET_TOKEN not in text
    assert "FAILING" in chans.output and chans.exit_code == 1


def history_attempts(db: Database) -> list[dict[str, str]]:
    from postwatch.alerts.queries import history

    with db.session(readonly=True) as s:
        return list(history(s, account="gym")[0]["attempts"])


def write_config(tmp_path: Path, db: Database, owner_channels: list[str],
                 owner_name: str = "Marieke") -> Path:
    chans = ", ".join(json.dumps(c) for c in owner_channels)
    text = f"""
[database]
url = {json.dumps(db.url)}

[alerts]
public_url = "https://postwatch.hoster.example"
secret = "test-secret-for-links"

[[accounts]]
id = "gym"
name = "Sportschool <Fit> & co"

[[accounts.mailboxes]]
address = "info@gym.example"

[[accounts.contacts]]
name = {json.dumps(owner_name)}
role = "owner"
language = "nl"
channels = [{chans}]

[[accounts.contacts]]
name = "Hostingpartner ops"
role = "hoster"
channels = ["json://127.0.0.1:9/hoster"]
"""
    path = tmp_path / "postwatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_cli_history_json_and_ack(db: Database, tmp_path: Path, sink: WebhookSink,
                                  clock: ManualClock) -> None:
    path = write_config(tmp_path, db, [sink.url("owner")])
    from postwatch.config import load_config

    eng = Engine(load_config(path), db, clock=clock)
    burst(db, clock, 4)
    eng.step()
    runner = CliRunner()
    out = runner.invoke(cli_app, ["alerts", "list", "-c", str(path)])
    assert out.exit_code == 0 and "mailbox_full" in out.output and "x4" in out.output
    alert_id = int(out.output.splitlines()[1].split()[0])  # under the header
    out = runner.invoke(cli_app, ["alerts", "ack", str(alert_id), "--by", "Jan", "-c", str(path)])
    assert out.exit_code == 0 and "acknowledged by Jan" in out.output
    out = runner.invoke(cli_app, ["alerts", "ack", "999", "-c", str(path)])
    assert out.exit_code == 1 and "no alert 999" in out.output
    out = runner.invoke(cli_app, ["alerts", "history", "--account", "gym", "--json",
                                  "-c", str(path)])
    rows = json.loads(out.output)
    assert rows[0]["contact"] == "Marieke" and rows[0]["state"] == "sent"
    assert rows[0]["acked_by"] == "Jan" and rows[0]["kind"] == "fired"
    assert rows[0]["attempts"][0]["channel"] == sink.url("owner")
    assert "info@gym.example is vol" in rows[0]["message"]
    out = runner.invoke(cli_app, ["alerts", "history", "--account", "nope", "-c", str(path)])
    assert out.exit_code == 1 and "no account" in out.output


def test_responsibilities_sheet_text_and_escaped_html(db: Database, tmp_path: Path) -> None:
    path = write_config(tmp_path, db, ["json://127.0.0.1:9/o"], owner_name="<script>x</script>")
    runner = CliRunner()
    out = runner.invoke(cli_app, ["responsibilities", "--account", "gym", "-c", str(path)])
    assert out.exit_code == 0, out.output
    assert "mailbox" in out.output and "Hostingpartner ops (hoster)" in out.output
    assert "30 min" in out.output
    html = runner.invoke(cli_app, ["responsibilities", "--account", "gym", "--html",
                                   "-c", str(path)]).output
    assert html.startswith("<!doctype html>")
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert "Sportschool &lt;Fit&gt; &amp; co" in html
    bad = runner.invoke(cli_app, ["responsibilities", "--account", "zzz", "-c", str(path)])
    assert bad.exit_code == 1
    nl = runner.invoke(cli_app, ["responsibilities", "--account", "gym", "--language", "nl",
                                 "--html", "-c", str(path)]).output
    assert '<html lang="nl">' in nl and "Wie hoort waarover" in nl and "<script>" not in nl


def test_check_config_reports_owner_without_a_safe_channel(tmp_path: Path,
                                                           sink: WebhookSink) -> None:
    cfg = gym_config(tmp_path, sink, owner_channels=[
        "mailtos://info:pw@gym.example", "mailto://127.0.0.1:25?to=sales@gym.example&from=a@b.nl"])
    problems = check(cfg)
    assert any("owner Marieke has no channel that avoids" in p for p in problems)
    assert all("pw" not in p.split("mailtos")[-1][:12] for p in problems)
    ok = gym_config(tmp_path, sink, owner_channels=["mailtos://info:pw@gym.example",
                                                    sink.url("owner")])
    assert check(ok) == []
    broken = gym_config(tmp_path, sink, owner_channels=["nosuchscheme://x"],
                        responsibilities={"site": ["designer"]})
    problems = check(broken)
    assert any("not an Apprise URL" in p for p in problems)
    assert any("responsibilities.site: no contact has role designer" in p for p in problems)


def test_check_config_cli(db: Database, tmp_path: Path) -> None:
    path = write_config(tmp_path, db, ["mailtos://info:hunter2@gym.example"])
    out = CliRunner().invoke(cli_app, ["check-config", "-c", str(path)])
    assert out.exit_code == 2 and "no channel that avoids" in out.output
    assert "hunter2" not in out.output


def test_cli_silence_shows_held_back_then_unsilence(db: Database, tmp_path: Path,
                                                    sink: WebhookSink) -> None:
    path = write_config(tmp_path, db, [sink.url("owner")])
    runner = CliRunner()
    out = runner.invoke(cli_app, ["alerts", "silence", "--account", "gym", "--for", "2h",
                                  "--reason", "moving servers", "-c", str(path)])
    assert out.exit_code == 0, out.output
    sid = int(out.output.split()[1])
    from postwatch.config import load_config

    eng = Engine(load_config(path), db)
    burst(db, ManualClock(datetime.now(UTC)), 2)
    eng.step()
    assert sink.requests == []
    out = runner.invoke(cli_app, ["alerts", "list", "-c", str(path)])
    assert "held back: silenced" in out.output and "moving servers" in out.output
    out = runner.invoke(cli_app, ["alerts", "silences", "-c", str(path)])
    assert "moving servers" in out.output
    assert runner.invoke(cli_app, ["alerts", "unsilence", str(sid), "-c", str(path)]
                         ).exit_code == 0
    eng.step()
    assert len(sink.to("owner")) == 1
    bad = runner.invoke(cli_app, ["alerts", "silence", "--for", "soon", "-c", str(path)])
    assert bad.exit_code == 1 and "not a duration" in bad.output


def test_cli_channels_test_sends_and_shows_status(db: Database, tmp_path: Path,
                                                 sink: WebhookSink) -> None:
    sink.fail_paths.add("/down")
    path = write_config(tmp_path, db, [sink.url("owner"), sink.url("down")])
    out = CliRunner().invoke(cli_app, ["alerts", "channels", "--account", "gym", "--test",
                                       "-c", str(path)])
    assert len(sink.to("owner")) == 1 and len(sink.to("down")) == 1
    assert "1. " + sink.url("owner") + "  ok" in out.output
    assert "2. " + sink.url("down") + "  FAILING (1x" in out.output
    assert out.exit_code == 1


async def test_ack_page_escapes_what_it_shows(db: Database, tmp_path: Path,
                                              sink: WebhookSink) -> None:
    from postwatch.store.events import record_event

    clock = ManualClock(datetime.now(UTC))
    cfg = gym_config(tmp_path, sink)
    eng = Engine(cfg, db, clock=clock)
    evil = "/var/www/<script>alert(1)</script>"
    with db.session() as s:
        record_event(s, "quota_full", account="gym", at=clock.now(),
                     data={"subject": "site", "name": evil, "level": 100, "percent": 100.0})
    eng.step()
    token = link_token(sink.to("webmaster")[0]["body"]["message"])
    page = await client_for(eng, db).get(f"/alerts/ack/{token}")
    assert page.status_code == 200
    assert "<script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
