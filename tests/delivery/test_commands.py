"""``postwatch delivery queue|retry|check-smtp``."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from typer.testing import CliRunner

from postwatch.cli import app
from postwatch.config import load_config
from postwatch.delivery.worker import DeliveryWorker
from postwatch.store import Database
from postwatch.store.models import utcnow
from tests.delivery.conftest import drain, jobs, submit
from tests.smtpd import SmtpSink

INFO = "info@gym.example"
PASSWORD = "pw-Secret-123"


def write_config(path: Path, db: Database, port: int, **smtp: str) -> Path:
    extra = "".join(f'{k} = "{v}"\n' for k, v in smtp.items())
    path.write_text(f"""
[database]
url = "{db.url}"
[smtp]
host = "127.0.0.1"
port = {port}
sender = "postwatch@hoster.example"
timeout = "2s"
{extra}
[delivery]
full_retry_every = "1h"
[[accounts]]
id = "gym"
[[accounts.forms]]
id = "contact"
recipients = ["{INFO}"]
fallback = ["owner@private.example"]
""", encoding="utf-8")
    return path


def test_queue_and_retry(tmp_path: Path, db: Database, smtp_sink: SmtpSink) -> None:
    cfg_path = write_config(tmp_path / "pw.toml", db, smtp_sink.port)
    cfg = load_config(cfg_path)
    smtp_sink.set(INFO, "full452")
    sid = submit(db, cfg)
    worker = DeliveryWorker(cfg, db)
    drain(worker)
    runner = CliRunner()

    r = runner.invoke(app, ["delivery", "queue", "--config", str(cfg_path), "--json"])
    assert r.exit_code == 0, r.output
    [row] = [json.loads(line) for line in r.output.splitlines()]
    assert row["recipient"] == INFO and row["state"] == "held"
    assert row["last_reason"] == "mailbox_full" and row["submission"] == sid

    # the mailbox was emptied: retry now instead of waiting an hour
    smtp_sink.set(INFO, "accept")
    assert drain(worker) == 0  # not due yet
    r = runner.invoke(app, ["delivery", "retry", "--config", str(cfg_path), "--recipient", INFO])
    assert r.exit_code == 0 and r.output.startswith("1 job(s) due now"), r.output
    assert drain(worker) == 1
    assert jobs(db, sid)[INFO].state == "delivered"
    hold = jobs(db, sid)[INFO].hold_until
    assert hold is not None and hold > utcnow() + timedelta(days=6)  # the hold was kept

    r = runner.invoke(app, ["delivery", "queue", "--config", str(cfg_path)])
    assert r.exit_code == 0 and "the outbox is empty" in r.output
    r = runner.invoke(app, ["delivery", "retry", "--config", str(cfg_path), "--form", "nope"])
    assert r.exit_code != 0 and "no form 'nope'" in r.output


def test_check_smtp(tmp_path: Path, db: Database) -> None:
    runner = CliRunner()
    with SmtpSink(secure="starttls", auth=("postwatch", PASSWORD)) as sink:
        good = write_config(tmp_path / "good.toml", db, sink.port, security="starttls",
                            username="postwatch", password=PASSWORD, ca_file=str(sink.ca_file))
        r = runner.invoke(app, ["delivery", "check-smtp", "--config", str(good)])
        assert r.exit_code == 0 and "ok" in r.output, r.output
        assert sink.messages == []  # nothing was sent
        bad = write_config(tmp_path / "bad.toml", db, sink.port, security="starttls",
                           username="postwatch", password="x" + PASSWORD,
                           ca_file=str(sink.ca_file))
        r = runner.invoke(app, ["delivery", "check-smtp", "--config", str(bad)])
        assert r.exit_code == 4 and "auth" in r.output and "535" in r.output, r.output
        assert PASSWORD not in r.output
