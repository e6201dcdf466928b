"""`postwatch backup PATH`: a copy of the SQLite store made while it is written; restored, it is
the same store (every table, every row); PostgreSQL gets the pg_dump way."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from postwatch.cli import app
from postwatch.config import load_config
from postwatch.store import database_from_config
from postwatch.store.events import record_event


def write_config(folder: Path, url: str) -> Path:
    config = folder / "postwatch.toml"
    config.write_text(
        f"""[database]
url = "{url}"
[[accounts]]
id = "gym"
[[accounts.forms]]
id = "contact"
recipients = ["info@gym.example"]
"""
    )
    return config


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def postwatch(*args: str) -> Ran:
    res = CliRunner().invoke(app, list(args))
    return Ran(res.exit_code, res.stdout, res.stderr)


def dump(path: Path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def fill(config: Path, n: int, start: int = 0) -> None:
    db = database_from_config(load_config(config))
    try:
        for i in range(start, start + n):
            with db.session() as s:
                record_event(s, "mailbox_full", account="gym", mailbox="info@gym.example",
                             data={"n": i, "evidence": "552 5.2.2 é ' \" \n"})
    finally:
        db.dispose()


def test_backup_then_restore_gives_the_identical_store(tmp_path: Path) -> None:
    live, restored = tmp_path / "live", tmp_path / "restored"
    live.mkdir()
    restored.mkdir()
    config = write_config(live, "sqlite:///postwatch.db")
    assert postwatch("migrate", "-c", str(config)).returncode == 0
    fill(config, 120)
    res = postwatch("backup", str(tmp_path / "copy.db"), "-c", str(config))
    assert res.returncode == 0, res.stderr
    assert "integrity ok" in res.stdout
    # restore: the copy becomes another installation's store
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["copy.db"]  # one file
    (tmp_path / "copy.db").rename(restored / "postwatch.db")
    config2 = write_config(restored, "sqlite:///postwatch.db")
    assert dump(restored / "postwatch.db") == dump(live / "postwatch.db")
    assert postwatch("migrate", "-c", str(config2)).returncode == 0  # nothing to do
    ev = postwatch("events", "-c", str(config2), "--json", "--limit", "1000")
    assert ev.returncode == 0 and len(ev.stdout.splitlines()) == 120
    assert dump(restored / "postwatch.db") == dump(live / "postwatch.db")


def test_backup_while_the_store_is_written_is_a_consistent_snapshot(tmp_path: Path) -> None:
    config = write_config(tmp_path, "sqlite:///postwatch.db")
    assert postwatch("migrate", "-c", str(config)).returncode == 0
    fill(config, 50)
    writer = threading.Thread(target=fill, args=(config, 150, 50))
    writer.start()
    try:
        res = postwatch("backup", str(tmp_path / "copy.db"), "-c", str(config))
    finally:
        writer.join()
    assert res.returncode == 0, res.stderr
    con = sqlite3.connect(tmp_path / "copy.db")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        ns = sorted(int(n) for (n,) in con.execute(
            "SELECT json_extract(data, '$.n') FROM events WHERE kind = 'mailbox_full'"))
    finally:
        con.close()
    assert ns == list(range(len(ns))) and 50 <= len(ns) <= 200  # a prefix: no gap, no torn row


def test_backup_refuses_to_overwrite_and_names_postgresql_s_way(tmp_path: Path) -> None:
    config = write_config(tmp_path, "sqlite:///postwatch.db")
    assert postwatch("migrate", "-c", str(config)).returncode == 0
    (tmp_path / "copy.db").write_text("keep me")
    res = postwatch("backup", str(tmp_path / "copy.db"), "-c", str(config))
    assert res.returncode == 1 and "exists" in res.stderr
    assert (tmp_path / "copy.db").read_text() == "keep me"
    pg = write_config(tmp_path / "..", "postgresql+psycopg://pw:s3cret@db.example/postwatch")
    res = postwatch("backup", "/tmp/x.dump", "-c", str(pg))
    assert res.returncode == 2
    assert res.stdout.strip() == (
        "pg_dump -Fc --dbname='postgresql://pw@db.example/postwatch' -f '/tmp/x.dump'")
    assert "s3cret" not in res.stdout + res.stderr
