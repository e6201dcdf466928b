"""Start-up stays cheap: importing the CLI (and running ``investigate``) imports no SQLAlchemy,
pydantic, Jinja2 or Apprise; the commands that need them import them when they run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import postwatch
from postwatch.config import DEFAULT_CONFIG_PATH
from postwatch.rooms import DEFAULT_CONFIG_PATH as ROOMS_DEFAULT_CONFIG_PATH

SRC = str(Path(postwatch.__file__).resolve().parent.parent)
HEAVY = ("sqlalchemy", "pydantic", "jinja2", "apprise", "alembic", "fastapi")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _loaded_after(code: str) -> dict[str, bool]:
    probe = f"{code}\nimport sys\nfor m in {HEAVY!r}: print('LOADED', m, m in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("LOADED ")]
    return {row[1]: row[2] == "True" for row in rows}


def test_default_config_path_agrees() -> None:
    assert ROOMS_DEFAULT_CONFIG_PATH == DEFAULT_CONFIG_PATH


def test_import_cli_is_cheap() -> None:
    loaded = _loaded_after("import postwatch.cli")
    assert loaded == dict.fromkeys(HEAVY, False)


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint('MODULES', *sorted(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return {m for line in out.splitlines() if line.startswith("MODULES ") for m in line.split()[1:]}


def test_help_imports_nothing_heavy() -> None:
    code = (
        "from postwatch.cli import app\n"
        "try:\n    app(['--help'], prog_name='postwatch')\nexcept SystemExit as e:\n"
        "    assert not e.code, e.code"
    )
    assert _loaded_after(code) == dict.fromkeys(HEAVY, False)


def test_investigate_imports_no_database_or_config(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text(
        "Nov 29 08:00:01 mx postfix/smtp[1]: 4ABC: to=<info@gym.example>, relay=local, "
        "delay=0.1, dsn=5.2.2, status=bounced (552 5.2.2 mailbox full)\n",
        encoding="utf-8",
    )
    report = tmp_path / "r.json"
    args = [
        "investigate",
        "--mailbox",
        "info@gym.example",
        "--mail-log",
        str(log),
        "--form-path",
        "/contact",
        "--year",
        "2026",
        "--json",
        str(report),
        "-q",
    ]
    code = (
        "from postwatch.cli import app\n"
        f"try:\n    app({args!r}, prog_name='postwatch')\n"
        "except SystemExit as e:\n    assert not e.code, e.code"
    )
    loaded = _loaded_after(code)
    assert report.exists()
    # Typer itself imports pydantic to coerce a command's parameters: not ours to avoid
    loaded.pop("pydantic")
    assert loaded == {m: False for m in HEAVY if m != "pydantic"}
    assert "postwatch.config" not in _modules_after(code)
