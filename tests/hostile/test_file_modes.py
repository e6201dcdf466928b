"""Issue 11 low: the store (personal data) and the sample config (the ack-link secret) were
created 0644, readable by every user of the machine."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from typer.testing import CliRunner

from postwatch.cli import app
from postwatch.store import Database
from postwatch.store.events import record_event


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_sqlite_store_and_its_journal_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "data" / "postwatch.db"
        db = Database(f"sqlite:///{path}")
        db.migrate()
        with db.session() as s:
            record_event(s, "test", account=None)
        for p in (path, path.with_name("postwatch.db-wal"), path.with_name("postwatch.db-shm")):
            if p.exists():
                assert mode(p) == 0o600, (p, oct(mode(p)))
        assert mode(path.parent) == 0o700
        db.dispose()
    finally:
        os.umask(old)


def test_the_sample_config_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        cfg = tmp_path / "postwatch.toml"
        result = CliRunner().invoke(app, ["init", "--config", str(cfg)])
        assert result.exit_code == 0, result.output
        assert mode(cfg) == 0o600
        cfg.chmod(0o644)
        result = CliRunner().invoke(app, ["init", "--config", str(cfg), "--force"])
        assert result.exit_code == 0, result.output
        assert mode(cfg) == 0o600
    finally:
        os.umask(old)
