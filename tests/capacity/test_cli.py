"""The CLI edge: real config files, real Maildirs and trees, a real (closed) IMAP port."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from postwatch.app import running
from postwatch.cli import app
from postwatch.config import load_config
from postwatch.store import Database
from postwatch.store.events import fetch_events
from tests.capacity.helpers import make_maildir, write

SECRET = "s3cret-imap-pw"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, db_url: str, *, extra: str = "", port: int = 1) -> Path:
    box = tmp_path / "vmail" / "info"
    make_maildir(box, {"": [40_000, 60_000]})
    site = tmp_path / "www"
    write(site / "wp-content" / "uploads" / "a.jpg", 300_000)
    write(site / "wp-content" / "updraft" / "b.zip", 200_000)
    imap = (
        f'{{ source = "imap", host = "127.0.0.1", port = {closed_port()}, '
        f'user = "anna@gym.example", password = "{SECRET}", tls = "none" }}'
    )
    text = f"""
[server]
listen = "127.0.0.1:{port}"
[database]
url = "{db_url}"
[[accounts]]
id = "gym"
[[accounts.forms]]
id = "contact"
recipients = ["info@gym.example"]
[[accounts.mailboxes]]
address = "info@gym.example"
quota = {{ source = "maildir", path = "{box}" }}
limit_mb = 0.2
[[accounts.mailboxes]]
address = "anna@gym.example"
quota = {imap}
[[accounts.sites]]
root = "{site}"
limit_mb = 1
{extra}
[[accounts]]
id = "bakery"
[[accounts.mailboxes]]
address = "shop@bakery.example"
"""
    path = tmp_path / "postwatch.toml"
    path.write_text(text)
    return path


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_quota_poll_json_and_a_source_that_is_down(db: Database, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, db.url)
    before = cli("quota", "-c", str(cfg), "--json")
    rows = json.loads(before.stdout)
    assert all(r["error"].startswith("no reading yet") for r in rows)
    res = cli("quota", "-c", str(cfg), "--poll", "--json")
    assert res.exit_code == 0, res.output
    rows = {r["mailbox"]: r for r in json.loads(res.stdout)}
    assert set(rows) == {"info@gym.example", "anna@gym.example"}
    info = rows["info@gym.example"]
    for key in (
        "mailbox",
        "source",
        "used_bytes",
        "limit_bytes",
        "percent",
        "growth_bytes_per_day",
        "full_at",
        "read_at",
        "error",
    ):
        assert key in info
    assert info["used_bytes"] == 100_000 and info["limit_bytes"] == int(0.2 * 1024 * 1024)
    assert info["error"] is None and info["source"] == "maildir"
    anna = rows["anna@gym.example"]
    assert anna["used_bytes"] is None and anna["percent"] is None
    assert "connection refused" in anna["error"]
    assert SECRET not in res.output
    table = cli("quota", "-c", str(cfg))
    assert "ERROR: imap://127.0.0.1:" in table.stdout and "connection refused" in table.stdout
    assert "info@gym.example" in table.stdout and "maildir" in table.stdout
    with db.session(readonly=True) as s:
        evs = fetch_events(s, kinds=["quota_source_failed"])
        assert len(evs) == 1 and evs[0].mailbox == "anna@gym.example"
        assert SECRET not in json.dumps(evs[0].data)
        # 100 KB of 204.8 KB: no warning
        assert fetch_events(s, kinds=["quota_warning"]) == []


def test_quota_unknown_account_is_a_clear_error(db: Database, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, db.url)
    res = cli("quota", "-c", str(cfg), "--account", "nope")
    assert res.exit_code == 2 and "unknown account 'nope'" in res.stderr
    only = cli("quota", "-c", str(cfg), "--account", "bakery", "--json")
    assert json.loads(only.stdout) == []  # bakery has no quota source


def test_space_json_breakdown_and_package(db: Database, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, db.url)
    cli("quota", "-c", str(cfg), "--poll")
    res = cli("space", "-c", str(cfg), "--account", "gym", "--json")
    assert res.exit_code == 0, res.output
    site = json.loads(res.stdout)["sites"][0]
    assert site["total_bytes"] == 500_000 and site["limit_bytes"] == 1024 * 1024
    assert site["categories"]["uploads"] == 300_000 and site["categories"]["backups"] == 200_000
    assert site["largest"][0] == {
        "path": "wp-content/uploads/a.jpg",
        "bytes": 300_000,
        "category": "uploads",
    }
    # the Maildir is outside the site: it shares the package
    assert site["mail_outside_bytes"] == 100_000
    assert site["package_used_bytes"] == 600_000
    assert site["mail_room_bytes"] == 1024 * 1024 - 500_000
    human = cli("space", "-c", str(cfg), "--account", "gym")
    assert "uploads" in human.stdout and "mail can use at most" in human.stdout
    assert cli("space", "-c", str(cfg), "--account", "bakery").exit_code == 2


def test_campaign_check_fits_or_not(db: Database, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, db.url)
    cli("quota", "-c", str(cfg), "--poll")
    ok = cli(
        "campaign",
        "check",
        "-c",
        str(cfg),
        "--account",
        "gym",
        "--expected-submissions",
        "3",
        "--days",
        "7",
        "--avg-message-kb",
        "10",
        "--json",
    )
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    box = data["mailboxes"][0]
    assert box["campaign_bytes"] == 3 * 10 * 1024 and box["fits"] is True
    assert box["headroom_bytes"] == int(0.2 * 1024 * 1024) - 100_000 - 30_720
    assert data["package"]["fits"] is True and data["fits"] is True
    no = cli(
        "campaign",
        "check",
        "-c",
        str(cfg),
        "--account",
        "gym",
        "--expected-submissions",
        "200",
        "--days",
        "7",
    )
    assert no.exit_code == 1
    assert "NO" in no.stdout and "headroom" in no.stdout and "DOES NOT FIT" in no.stdout


def test_campaign_without_readings_is_not_a_yes(db: Database, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, db.url)
    res = cli(
        "campaign",
        "check",
        "-c",
        str(cfg),
        "--account",
        "gym",
        "--expected-submissions",
        "1",
        "--days",
        "1",
    )
    assert res.exit_code == 1 and "unknown" in res.stdout


def test_hook_writes_to_the_store_when_no_service_runs(db: Database, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, db.url, port=closed_port())
    res = cli(
        "hook", "quota-warning", "-c", str(cfg), "--user", "info@gym.example", "--percent", "95"
    )
    assert res.exit_code == 0
    assert "the postwatch store: quota_warning" in res.stdout and res.stderr == ""
    again = cli(
        "hook", "quota-warning", "-c", str(cfg), "--user", "info@gym.example", "--percent", "95"
    )
    assert "no new event" in again.stdout
    with db.session(readonly=True) as s:
        evs = fetch_events(s, kinds=["quota_warning"])
    assert len(evs) == 1 and evs[0].account == "gym" and evs[0].data["via"] == "dovecot_hook"
    assert evs[0].data["level"] == 95


def test_hook_never_fails_dovecot_unless_strict(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        f"postgresql+psycopg://nobody@127.0.0.1:{closed_port()}/x",
        port=closed_port(),
    )
    soft = cli(
        "hook", "quota-warning", "-c", str(cfg), "--user", "info@gym.example", "--percent", "80"
    )
    assert soft.exit_code == 0 and "NOT RECORDED" in soft.stderr
    strict = cli(
        "hook",
        "quota-warning",
        "-c",
        str(cfg),
        "--user",
        "info@gym.example",
        "--percent",
        "80",
        "--strict",
    )
    assert strict.exit_code == 1
    bad = cli(
        "hook", "quota-warning", "-c", str(cfg), "--user", "a b", "--percent", "80", "--strict"
    )
    assert bad.exit_code == 1 and "bad --user" in bad.stderr


async def test_hook_posts_to_the_running_service(db: Database, tmp_path: Path) -> None:
    port = closed_port()
    path = write_config(tmp_path, db.url, port=port)
    cfg = load_config(path)
    async with running(cfg, db):
        for _ in range(100):
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        res = await asyncio.to_thread(
            cli,
            "hook",
            "quota-warning",
            "-c",
            str(path),
            "--user",
            "info@gym.example",
            "--percent",
            "80",
        )
    assert res.exit_code == 0
    assert "postwatch: quota-warning info@gym.example 80%: postwatch: quota_warning" in res.stdout
    with db.session(readonly=True) as s:
        evs = fetch_events(s, kinds=["quota_warning"])
    assert len(evs) == 1 and evs[0].data["level"] == 80


def test_hook_strict_is_a_wiring_test_that_alerts_nobody(db: Database, tmp_path: Path) -> None:
    """Issue 10 item 2: `--strict` ("for testing the wiring") recorded a real reading and the
    customer was alerted "at 95%" while the mailbox was at 22 %."""
    from postwatch.alerts.engine import Engine
    from postwatch.capacity.conditions import current_state

    path = write_config(tmp_path, db.url, port=closed_port())
    res = cli("hook", "quota-warning", "-c", str(path), "--user", "info@gym.example",
              "--percent", "95", "--strict")
    assert res.exit_code == 0, res.stderr
    assert "wiring ok" in res.stdout and "nobody alerted" in res.stdout
    with db.session(readonly=True) as s:
        assert fetch_events(s, kinds=["quota_warning", "quota_full"]) == []
        tests = fetch_events(s, kinds=["hook_test"])
        assert len(tests) == 1 and tests[0].account == "gym" and tests[0].data["known"]
        assert current_state(s, "mailbox", "info@gym.example") is None
    eng = Engine(load_config(path), db)
    eng.step()
    with db.session(readonly=True) as s:
        assert fetch_events(s, kinds=["alert_fired", "notification_sent"]) == []
    # the real hook afterwards still warns once
    real = cli("hook", "quota-warning", "-c", str(path), "--user", "info@gym.example",
               "--percent", "95")
    assert "quota_warning" in real.stdout
