"""The seam to postwatch's event log: notifications and quota history in the report."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from postwatch.cli import app
from postwatch.config import load_config
from postwatch.forensics.history import history_from_events
from postwatch.store import database_from_config
from postwatch.store.events import record_event

LOGS = Path(__file__).parent.parent / "fixtures" / "logs" / "gym"


def test_history_from_plain_rows() -> None:
    rows = [
        {
            "id": 3,
            "at": "2026-10-24T10:05:00+00:00",
            "kind": "notification_sent",
            "account": "gym",
            "mailbox": "info@gym.example",
            "data": {"to": "owner"},
        },
        {
            "id": 1,
            "at": "2026-10-24T10:00:00+00:00",
            "kind": "mailbox_full",
            "account": "gym",
            "mailbox": "INFO@gym.example",
            "data": {},
        },
        {
            "id": 2,
            "at": "2026-10-24T09:00:00+00:00",
            "kind": "quota_reading",
            "account": "gym",
            "mailbox": "info@gym.example",
            "data": {"percent": 97},
        },
        {
            "id": 4,
            "at": "2026-10-24T11:00:00+00:00",
            "kind": "notification_sent",
            "account": "gym",
            "mailbox": "other@gym.example",
            "data": {},
        },
        {
            "id": 5,
            "at": "2026-10-24T11:00:00+00:00",
            "kind": "submission_stored",
            "account": "gym",
            "mailbox": None,
            "data": {},
        },
    ]
    notes, quota = history_from_events(rows, mailbox="info@gym.example")
    assert [n["kind"] for n in notes] == ["mailbox_full", "notification_sent"]
    assert [q["percent"] for q in quota] == ["97%"]
    assert "data" not in notes[0] and "data" not in quota[0]  # rows for people, not raw JSON


def test_config_adds_who_was_told_what(tmp_path: Path) -> None:
    cfg_path = tmp_path / "postwatch.toml"
    cfg_path.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/pw.db"\n')
    db = database_from_config(load_config(cfg_path))
    db.migrate()
    with db.session() as s:
        record_event(
            s,
            "mailbox_full",
            account="gym",
            mailbox="info@gym.example",
            data={"evidence": "<b>552 5.2.2</b>"},
            at=datetime(2026, 10, 24, 10, 0, 6, tzinfo=UTC),
        )
        record_event(
            s,
            "notification_sent",
            account="gym",
            mailbox="info@gym.example",
            data={"channel": "mailto://owner@gym.example", "to": "owner"},
            at=datetime(2026, 10, 24, 10, 0, 9, tzinfo=UTC),
        )
        record_event(
            s,
            "quota_reading",
            account="gym",
            mailbox="info@gym.example",
            data={"used_kib": 204, "limit_kib": 200},
            at=datetime(2026, 10, 24, 9, 0, tzinfo=UTC),
        )
    out = tmp_path / "r.json"
    res = CliRunner().invoke(
        app,
        [
            "investigate",
            "--quiet",
            "--config",
            str(cfg_path),
            "--mail-log",
            str(LOGS / "mail.log.1"),
            "--form-path",
            "/contact",
            "--mailbox",
            "info@gym.example",
            "--year",
            "2026",
            "--form-sender",
            "wordpress@gym.example",
            "--timezone",
            "Europe/Berlin",
            "--since",
            "2026-10-24",
            "--until",
            "2026-10-27",
            "--json",
            str(out),
            "--html",
            str(tmp_path / "r.html"),
        ],
    )
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert [n["kind"] for n in d["history"]["notifications"]] == [
        "mailbox_full",
        "notification_sent",
    ]
    q = d["history"]["quota"][0]
    assert (q["used"], q["limit"], q["percent"]) == ("204.0 KB", "200.0 KB", "102%")
    told = d["history"]["notifications"][1]
    assert told["how"] == "e-mail" and told["what"] == "told"
    assert not any("How full the mailbox was" in q for q in d["unanswered"])
    assert not any("Who was told" in q for q in d["unanswered"])
    html = (tmp_path / "r.html").read_text()
    assert "Who was told what" in html and "<b>552" not in html
    assert "{&#34;" not in html and '{"' not in html  # tables, not JSON


def test_bad_config_is_a_message(tmp_path: Path) -> None:
    cfg_path = tmp_path / "bad.toml"
    cfg_path.write_text("[database\nurl=")
    res = CliRunner().invoke(
        app,
        [
            "investigate",
            "--quiet",
            "--config",
            str(cfg_path),
            "--mail-log",
            str(LOGS / "mail.log"),
            "--form-path",
            "/c",
            "--mailbox",
            "info@gym.example",
            "--json",
            str(tmp_path / "r.json"),
        ],
    )
    assert res.exit_code == 3
    assert str(cfg_path) in res.output and "Traceback" not in res.output


def test_database_password_is_never_printed(tmp_path: Path) -> None:
    cfg_path = tmp_path / "pg.toml"
    cfg_path.write_text(
        '[database]\nurl = "postgresql+psycopg://pw:s3cr3t-pass@127.0.0.1:1/nothing"\n'
    )
    res = CliRunner().invoke(
        app,
        [
            "investigate",
            "--quiet",
            "--config",
            str(cfg_path),
            "--mail-log",
            str(LOGS / "mail.log"),
            "--form-path",
            "/c",
            "--mailbox",
            "info@gym.example",
            "--json",
            str(tmp_path / "r.json"),
        ],
    )
    assert res.exit_code == 3
    assert "s3cr3t-pass" not in res.output
    assert "Traceback" not in res.output


def test_mask() -> None:
    from postwatch.forensics.history import mask

    assert mask("x postgresql://u:p@h/db y") == "x postgresql://u:***@h/db y"
    assert mask("sqlite:///a.db") == "sqlite:///a.db"


def test_told_rows_are_words_without_internal_data() -> None:
    from postwatch.forensics.history import told_row

    sent = told_row("notification_sent", "t", {
        "alert": 7, "contact": "Ellen de Vries", "role": "owner",
        "channel": "json://hooks.example/***", "message": "info@gym.example is full"})
    assert sent == {"at": "t", "kind": "notification_sent", "who": "Ellen de Vries (owner)",
                    "how": "webhook", "what": "told: info@gym.example is full"}
    full = told_row("mailbox_full", "t", {"source": "file:/var/log/mail.log",
                                           "evidence": "552 5.2.2"})
    assert "/var/log" not in str(full) and full["what"].startswith("postwatch saw")
    esc = told_row("alert_escalated", "t", {"severity": "critical", "concern": "mailbox_full"})
    assert esc["what"] == "alert escalated to the next person (critical, mailbox_full)"


def test_each_sign_up_once_with_where_it_went() -> None:
    from postwatch.forensics.history import signup_from_row

    at = datetime(2026, 10, 24, 10, 0, tzinfo=UTC)

    def where(*jobs: tuple[str, str, str]) -> str:
        row = {"submission": "s1", "received_at": at, "form": "gym/contact", "jobs": [
            {"recipient": r, "role": role, "state": state, "delivered_at": at,
             "last_reason": "mailbox_full"} for r, role, state in jobs]}
        return signup_from_row(row, mailbox="Info@gym.example").where

    info, owner = "info@gym.example", "owner@private.example"
    assert where((info, "primary", "delivered")) == "primary"
    assert where((info, "primary", "delivered"), (owner, "fallback", "delivered")) == "both"
    assert where((info, "primary", "held"), (owner, "fallback", "delivered")) == "fallback"
    assert where((info, "primary", "held"), (owner, "fallback", "pending")) == "waiting"
    assert where((info, "primary", "failed"), (owner, "fallback", "failed")) == "lost"
    assert where((info, "primary", "failed")) == "lost"
