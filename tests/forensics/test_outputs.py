"""``investigate`` outputs (issue 10, item 9): no --json needed, the answer on stdout without
any output flag, a display time zone apart from the logs' zone, a mail-log-only run without
--form-path."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from postwatch.cli import app

LOGS = Path(__file__).parent.parent / "fixtures" / "logs" / "gym"
runner = CliRunner()

MAIL_ONLY = ["investigate", "--quiet", "--mail-log", str(LOGS / "mail.log.1"),
             "--mailbox", "info@gym.example", "--form-sender", "wordpress@gym.example",
             "--year", "2026", "--timezone", "Europe/Berlin"]


def test_mail_log_only_needs_no_form_path_and_prints_the_answer() -> None:
    res = runner.invoke(app, MAIL_ONLY)
    assert res.exit_code == 0, res.output
    lines = [x for x in res.stdout.splitlines() if x.strip()]
    assert len(lines) == 3, res.stdout
    assert "form mails to info@gym.example" in lines[0]
    assert "no access log was given" in lines[0]
    assert "submitted 0 times" not in res.stdout


def test_html_alone_without_json(tmp_path: Path) -> None:
    res = runner.invoke(app, [*MAIL_ONLY, "--html", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert res.stdout == ""  # the answer is in the file; --quiet keeps stderr empty
    res = runner.invoke(app, [*MAIL_ONLY, "--csv", str(tmp_path / "r.csv")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r.csv").read_text().startswith("arrived,")
    assert not (tmp_path / "r.json").exists()


def test_access_log_still_needs_the_form_path(tmp_path: Path) -> None:
    res = runner.invoke(app, [*MAIL_ONLY, "--access-log", str(LOGS / "other_vhosts_access.log")])
    assert res.exit_code == 2 and "--form-path" in res.output


def test_display_timezone_apart_from_the_logs_zone(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = runner.invoke(app, [*MAIL_ONLY, "--json", str(out), "--display-timezone",
                              "America/New_York"])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["query"]["timezone"] == "Europe/Berlin"
    assert d["query"]["display_timezone"] == "America/New_York"
    first = d["mail"]["first_mailbox_full"]
    assert first.endswith("-04:00") or first.endswith("-05:00")
    base = tmp_path / "b.json"
    assert runner.invoke(app, [*MAIL_ONLY, "--json", str(base)]).exit_code == 0
    berlin = json.loads(base.read_text())["mail"]["first_mailbox_full"]
    from datetime import datetime

    assert datetime.fromisoformat(first) == datetime.fromisoformat(berlin)  # same instant
    assert any("EDT" in s or "EST" in s for s in d["answer"])
    bad = runner.invoke(app, [*MAIL_ONLY, "--display-timezone", "Mars/Olympus"])
    assert bad.exit_code == 2 and "--display-timezone" in bad.output
