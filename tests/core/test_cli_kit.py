"""The CLI edge: a library error is a one-line message and a documented exit code, never a
traceback (postwatch.cli_kit). Exit codes: docs/CLI.md."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import postwatch
from postwatch.cli import app
from postwatch.cli_kit import ExitCode

SRC = str(Path(postwatch.__file__).resolve().parent.parent)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unusable_stores(tmp_path: Path) -> dict[str, str]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    return {
        "postgresql-down": f"postgresql+psycopg://postwatch@127.0.0.1:{_closed_port()}/x",
        "path-under-a-file": f"sqlite:///{a_file}/sub/postwatch.db",
        "unknown-driver": "postgresql+nodriver://postwatch@127.0.0.1/x",
        "unresolvable-host": "postgresql+psycopg://postwatch@no-such-host.invalid/x",
    }


#: commands that open the store, with the arguments they need besides --config
STORE_COMMANDS = [
    ["migrate"],
    ["events"],
    ["submissions", "list"],
    ["submissions", "purge", "--expired"],
    ["delivery", "queue"],
    ["delivery", "retry"],
    ["alerts", "list"],
    ["alerts", "history", "--account", "gym"],
    ["quota"],
    ["watch-status"],
]


@pytest.mark.parametrize("store", ["postgresql-down", "path-under-a-file", "unknown-driver",
                                   "unresolvable-host"])
def test_an_unusable_store_is_a_message_and_exit_3(store: str, tmp_path: Path) -> None:
    url = _unusable_stores(tmp_path)[store]
    config = tmp_path / "postwatch.toml"
    config.write_text(f'[database]\nurl = "{url}"\n[[accounts]]\nid = "gym"\n')
    runner = CliRunner()
    for command in STORE_COMMANDS:
        r = runner.invoke(app, [*command, "--config", str(config)])
        assert r.exit_code == ExitCode.STORE_UNAVAILABLE, (command, r.output, r.exception)
        assert isinstance(r.exception, SystemExit), (command, r.exception)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and "unavailable" in lines[0], (command, r.output)
        assert "Traceback" not in r.output


def test_an_uncaught_store_error_in_a_command_is_exit_3(tmp_path: Path) -> None:
    """A command that does not catch StoreUnavailable itself still gives a message and 3."""
    import typer

    from postwatch.cli_kit import CliGroup
    from postwatch.store import StoreUnavailable

    probe = typer.Typer(cls=CliGroup)

    @probe.command()
    def down() -> None:
        raise StoreUnavailable("connection refused")

    @probe.command()
    def bug() -> None:
        raise ZeroDivisionError

    r = CliRunner().invoke(probe, ["down"])
    assert r.exit_code == 3 and r.output.strip() == "postwatch: database unavailable: " \
        "connection refused"
    r = CliRunner().invoke(probe, ["bug"])
    assert isinstance(r.exception, ZeroDivisionError)  # a bug keeps its traceback


def _postwatch(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "postwatch", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_http_listen_address_in_use_is_one_message_and_exit_5(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        config = tmp_path / "postwatch.toml"
        config.write_text(
            f'[server]\nlisten = "127.0.0.1:{port}"\n[database]\nurl = "sqlite:///pw.db"\n'
        )
        r = _postwatch(["serve", "--config", str(config)], tmp_path)
    assert r.returncode == ExitCode.ADDRESS_IN_USE, r.stderr
    assert "Traceback" not in r.stderr
    assert f"server.listen = '127.0.0.1:{port}'" in r.stderr
    assert "in use" in r.stderr


def test_syslog_listen_address_in_use_stops_start_up_with_exit_5(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        config = tmp_path / "postwatch.toml"
        config.write_text(
            f'[database]\nurl = "sqlite:///pw.db"\n[syslog]\nlisten = "127.0.0.1:{port}"\n'
        )
        r = _postwatch(["worker", "--config", str(config)], tmp_path)
    assert r.returncode == ExitCode.ADDRESS_IN_USE, r.stderr
    assert "Traceback" not in r.stderr
    assert f"syslog.listen = '127.0.0.1:{port}'" in r.stderr


def test_exit_codes_are_documented() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "CLI.md").read_text(encoding="utf-8")
    for code in ExitCode:
        assert f"| {code.value} | {code.meaning} |" in text, code
