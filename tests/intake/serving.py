"""Run a real ``postwatch serve`` subprocess on a free loopback port (tests only)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SRC = Path(__file__).resolve().parents[2] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    path: Path, db_url: str, port: int, *, server: dict[str, object] | None = None, **intake: object
) -> Path:
    """A config with the gym's contact form (two recipients) and SMTP on an unused port.
    ``server`` adds ``[server]`` options (values written as JSON, which TOML reads alike)."""
    lines = [
        "[server]",
        f'listen = "127.0.0.1:{port}"',
        *[f"{k} = {json.dumps(v)}" for k, v in (server or {}).items()],
        "[database]",
        f'url = "{db_url}"',
        "[smtp]",
        'host = "127.0.0.1"',
        f"port = {free_port()}",  # nobody listens: deliveries wait, nothing leaves the machine
        'sender = "postwatch@hoster.example"',
        "[intake]",
        "rate_limit = 0",
        *[f"{k} = {v}" for k, v in intake.items()],
        "[[accounts]]",
        'id = "gym"',
        "[[accounts.forms]]",
        'id = "contact"',
        'recipients = ["info@gym.example", "sales@gym.example"]',
        'fallback = ["owner@private.example"]',
        'redirect = "https://gym.example/bedankt"',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _limit_fds(n: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


class Serve:
    """``python -m postwatch serve --config F`` in a subprocess, waited for until healthy."""

    def __init__(
        self,
        config: Path,
        port: int,
        *,
        cwd: Path | None = None,
        args: tuple[str, ...] = (),
        nofile: int | None = None,
    ) -> None:
        """``nofile``: the process's file-descriptor limit (soft and hard), like a small VPS."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log = (cwd or config.parent) / f"serve-{port}-{time.monotonic_ns()}.log"
        self._logf = open(self.log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postwatch", "serve", "--config", str(config), *args],
            cwd=cwd or config.parent,
            env=env,
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: _limit_fds(nofile)) if nofile else None,
        )
        self.wait_healthy()

    def output(self) -> str:
        if not self._logf.closed:  # after terminate()/kill() the file is closed: read it anyway
            self._logf.flush()
        return self.log.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postwatch serve exited early:\n{self.output()}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"postwatch serve did not become healthy:\n{self.output()}")

    def kill(self) -> None:
        """kill -9: no cleanup, no flush, nothing."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._logf.close()

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._logf.close()
