"""``postwatch delivery queue`` output for people: a header, times with their zone."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from typer.testing import CliRunner

from postwatch.cli import app
from postwatch.config import load_config
from postwatch.delivery.worker import DeliveryWorker
from postwatch.store import Database
from tests.delivery.conftest import drain, submit
from tests.delivery.test_commands import INFO, write_config
from tests.smtpd import SmtpSink


def test_queue_has_a_header_and_zoned_times(
    tmp_path: Path, sqlite_db: Database, smtp_sink: SmtpSink
) -> None:
    cfg_path = write_config(tmp_path / "pw.toml", sqlite_db, smtp_sink.port)
    cfg = load_config(cfg_path)
    smtp_sink.set(INFO, "full452")
    submit(sqlite_db, cfg)
    drain(DeliveryWorker(cfg, sqlite_db))
    runner = CliRunner()
    r = runner.invoke(app, ["delivery", "queue", "--config", str(cfg_path)])
    assert r.exit_code == 0, r.output
    header, row = r.output.splitlines()[:2]
    assert header.split()[:6] == ["JOB", "STATE", "ROLE", "RECIPIENT", "TRIES", "NEXT"]
    assert INFO in row and "held" in row
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", row), row
    r = runner.invoke(app, ["delivery", "queue", "--config", str(cfg_path), "--json"])
    [j] = [json.loads(x) for x in r.output.splitlines()]
    assert datetime.fromisoformat(j["next_attempt_at"]).tzinfo is not None
    assert datetime.fromisoformat(j["hold_until"]).tzinfo is not None
