"""One validation, run by ``check-config`` and by ``serve``/``worker``: a config that one
rejects, the other refuses to start with (exit 2, a message naming the option, no traceback).
Each case below was accepted by check-config, or started by serve, before (issue 11 item 7)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import postwatch
from postwatch.cli import app
from postwatch.cli_kit import ExitCode

SRC = str(Path(postwatch.__file__).resolve().parent.parent)

BASE = '[server]\nlisten = "127.0.0.1:{port}"\n[database]\nurl = "sqlite:///pw.db"\n'
ACCOUNT = '[[accounts]]\nid = "gym"\n'

#: name -> (extra TOML, text the message must hold)
BAD = {
    "syslog-port-out-of-range": ('[syslog]\nlisten = "127.0.0.1:99999"\n', "syslog.listen"),
    "syslog-no-port": ('[syslog]\nlisten = "nohostport"\n', "syslog.listen"),
    "maillog-unknown-zone": (
        '[[maillogs]]\npath = "mail.log"\ntimezone = "Mars/Olympus"\n', "unknown time zone"
    ),
    "bounce-mailbox-unknown-account": (
        ACCOUNT + '[[bounce_mailboxes]]\naccount = "nope"\nhost = "127.0.0.1"\nuser = "b"\n',
        "no account 'nope'",
    ),
    "bad-trusted-proxy": (None, "trusted_proxies[0]"),
    "missing-site-root": (ACCOUNT + '[[accounts.sites]]\nroot = "no/such/folder"\n',
                          "is not a folder"),
}


def _write(tmp_path: Path, case: str) -> Path:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    extra, _needle = BAD[case]
    text = BASE.format(port=port)
    if case == "bad-trusted-proxy":
        text = text.replace("[database]", 'trusted_proxies = ["10.0.0.0/33"]\n[database]')
    path = tmp_path / "postwatch.toml"
    path.write_text(text + (extra or ""), encoding="utf-8")
    return path


def _postwatch(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "postwatch", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_config_rejects(case: str, tmp_path: Path) -> None:
    path = _write(tmp_path, case)
    r = CliRunner().invoke(app, ["check-config", "--config", str(path)])
    assert r.exit_code == ExitCode.BAD_INPUT, r.output
    assert BAD[case][1] in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


@pytest.mark.parametrize("case", sorted(BAD))
def test_serve_refuses_to_start_with_what_check_config_rejects(case: str, tmp_path: Path) -> None:
    path = _write(tmp_path, case)
    r = _postwatch(["serve", "--config", str(path)], tmp_path)
    assert r.returncode == ExitCode.BAD_INPUT, r.stderr
    assert BAD[case][1] in r.stderr
    assert "Traceback" not in r.stderr


def test_worker_refuses_too(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad-trusted-proxy")
    r = _postwatch(["worker", "--config", str(path)], tmp_path)
    assert r.returncode == ExitCode.BAD_INPUT and "trusted_proxies[0]" in r.stderr, r.stderr


def test_a_good_config_passes_both(tmp_path: Path) -> None:
    path = tmp_path / "postwatch.toml"
    (tmp_path / "site").mkdir()
    path.write_text(
        BASE.format(port=8025) + ACCOUNT + '[[accounts.sites]]\nroot = "site"\n'
        '[syslog]\nlisten = "127.0.0.1:5514"\n'
        '[[maillogs]]\npath = "mail.log"\ntimezone = "Europe/Amsterdam"\n'
        '[[bounce_mailboxes]]\naccount = "gym"\nhost = "127.0.0.1"\nuser = "b"\n',
        encoding="utf-8",
    )
    r = CliRunner().invoke(app, ["check-config", "--config", str(path)])
    assert r.exit_code == 0, r.output
