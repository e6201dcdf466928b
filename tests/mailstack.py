"""pytest fixtures for a real Postfix + Dovecot (with quota) on loopback.

Use from a test package's conftest.py::

    from tests.mailstack import mailstack, mailstack_factory  # noqa: F401

``mailstack`` (session-scoped) gives a running :class:`MailStack` with the default users:
``info@gym.example`` (200K quota, no grace), ``anna@gym.example``, ``web@example.test`` and
``bounces@example.test`` (1G each). ``mailstack_factory(users=..., bulk=2000, ...)`` starts
further stacks (stopped at session end), e.g. with 2,000 mailboxes for the capacity benchmark.
Call ``stack.reset()`` (or ``stack.empty(address)``) at the start of a test that needs empty
mailboxes. Tests skip when Postfix/Dovecot are missing (and fail in CI, via ``require``).

The stack itself is built by ``scripts/mailstack`` (loaded here as a module), so the fixture
and ``.ci/run`` use the same code.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support import require

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "mailstack"


def _load_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("postwatch_mailstack_script", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


script = _load_script()


def available() -> bool:
    """True when Postfix and Dovecot are installed and we are root (needed to start them)."""
    return bool(script.binaries_present()) and os.geteuid() == 0


@dataclass(frozen=True)
class User:
    address: str
    password: str
    quota_bytes: int  # 0 = no per-user limit (the 1G default applies)


class MailStack:
    """A running Postfix + Dovecot under ``directory`` (see scripts/mailstack)."""

    def __init__(self, directory: Path, state: dict[str, Any]) -> None:
        self.directory = directory
        self.state = state
        self.smtp_port: int = state["smtp_port"]  # accepts, then bounces (LMTP after DATA)
        self.rcpt_port: int = state["rcpt_port"]  # refuses over-quota at RCPT (quota-status)
        self.imap_port: int = state["imap_port"]
        self.quota_status_port: int = state["quota_status_port"]
        self.host = "127.0.0.1"
        self.dovecot_conf = Path(state["dovecot_conf"])
        self.postfix_config_dir = Path(state["postfix_config_dir"])
        self.postfix_log = Path(state["postfix_log"])
        self.dovecot_log = Path(state["dovecot_log"])
        self.quota_warning_log = Path(state["quota_warning_log"])
        self.users = [User(u["address"], u["password"], u["quota_bytes"]) for u in state["users"]]
        self._by_address = {u.address: u for u in self.users}

    # ------------------------------------------------------------------------------ basics
    def user(self, address: str) -> User:
        return self._by_address[address]

    def password(self, address: str) -> str:
        return self._by_address[address].password

    def stop(self) -> None:
        script.stop(self.directory, quiet=True)

    def doveadm(self, *args: str, check: bool = True, input: bytes | None = None) -> str:
        """Run ``doveadm -c CONF ARGS`` and return its stdout."""
        proc = subprocess.run(
            ["doveadm", "-c", str(self.dovecot_conf), *args],
            input=input,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"doveadm {' '.join(args)} failed ({proc.returncode}): "
                f"{proc.stderr.decode(errors='replace').strip()}"
            )
        return proc.stdout.decode(errors="replace")

    def quota(self, address: str) -> tuple[int, int]:
        """(used KiB, limit KiB) of the STORAGE quota, as doveadm reports it."""
        out = self.doveadm("quota", "get", "-u", address)
        for line in out.splitlines():
            m = re.match(r"^User quota\s+STORAGE\s+(\d+)\s+(\S+)", line)
            if m:
                limit = int(m.group(2)) if m.group(2).isdigit() else 0
                return int(m.group(1)), limit
        raise RuntimeError(f"no STORAGE row in doveadm quota get: {out!r}")

    def message_count(self, address: str) -> int:
        out = self.doveadm("mailbox", "status", "-u", address, "messages", "INBOX")
        m = re.search(r"messages=(\d+)", out)
        return int(m.group(1)) if m else 0

    def messages(self, address: str) -> list[bytes]:
        """The raw messages in ``address``'s INBOX."""
        out = subprocess.run(
            [
                "doveadm",
                "-c",
                str(self.dovecot_conf),
                "fetch",
                "-u",
                address,
                "text",
                "mailbox",
                "INBOX",
                "all",
            ],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
        parts = re.split(rb"(?m)^text:\n", out)
        return [p.rstrip(b"\x0c\n") + b"\n" for p in parts if p.strip(b"\x0c\n")]

    # ------------------------------------------------------------------------------- mail
    def send(
        self,
        sender: str,
        recipients: str | Iterable[str],
        *,
        subject: str = "postwatch test",
        body: str = "hello\n",
        size: int = 0,
        port: str = "smtp",
        headers: dict[str, str] | None = None,
        message: bytes | None = None,
    ) -> dict[str, tuple[int, bytes]]:
        """Send one message over SMTP to the ``smtp`` or ``rcpt`` port.

        ``size`` pads the body to about that many bytes. Returns smtplib's refused-recipients
        dict; raises ``smtplib.SMTPRecipientsRefused`` when every recipient is refused.
        """
        rcpts = [recipients] if isinstance(recipients, str) else list(recipients)
        smtp_port = {"smtp": self.smtp_port, "rcpt": self.rcpt_port}[port]
        if message is None:
            msg = EmailMessage()
            msg["From"] = sender
            msg["To"] = ", ".join(rcpts)
            msg["Subject"] = subject
            msg["Message-ID"] = f"<{time.time_ns()}.{os.getpid()}@postwatch.test>"
            for k, v in (headers or {}).items():
                msg[k] = v
            text = body
            if size > len(text):
                line = "x" * 75 + "\n"
                text += line * ((size - len(text)) // len(line) + 1)
            msg.set_content(text)
            message = msg.as_bytes()
        with smtplib.SMTP(self.host, smtp_port, local_hostname="localhost", timeout=30) as s:
            return s.sendmail(sender, rcpts, message, mail_options=[f"SIZE={len(message)}"])

    def log_offset(self) -> int:
        """Current size of the Postfix log: pass it as ``since`` to :meth:`wait_log`."""
        try:
            return self.postfix_log.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_log(
        self, pattern: str, *, since: int = 0, timeout: float = 20.0, log: Path | None = None
    ) -> str:
        """Wait for a line matching ``pattern`` (regex) after byte offset ``since``."""
        path = log or self.postfix_log
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(path, "rb") as fh:
                    fh.seek(since)
                    for raw in fh:
                        line = raw.decode(errors="replace").rstrip("\n")
                        if rx.search(line):
                            return line
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no line matching {pattern!r} in {path} after {since}")
            time.sleep(0.05)

    def flush(self) -> None:
        """Ask Postfix to retry its deferred mail now."""
        subprocess.run(
            ["postqueue", "-c", str(self.postfix_config_dir), "-f"],
            capture_output=True,
            timeout=30,
            check=False,
        )

    # ------------------------------------------------------------------------------ quota
    def _save(self, address: str, size: int) -> bool:
        body = b"x" * 70 + b"\n"
        data = (
            b"From: filler@postwatch.test\nSubject: filler\nMessage-ID: <"
            + str(time.time_ns()).encode()
            + b"@fill.postwatch.test>\n\n"
            + body * max(1, size // len(body))
        )
        proc = subprocess.run(
            ["doveadm", "-c", str(self.dovecot_conf), "save", "-u", address],
            input=data,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if proc.returncode == 0:
            return True
        if b"Quota exceeded" in proc.stderr:
            return False
        raise RuntimeError(f"doveadm save failed: {proc.stderr.decode(errors='replace')}")

    def fill(self, address: str, percent: int = 100) -> None:
        """Fill ``address`` to its quota (directly, with doveadm save): any further mail
        bounces. With ``percent`` < 100, add one message that brings it to about that level.
        Needs a per-user limit (e.g. info@gym.example)."""
        limit = self.user(address).quota_bytes
        if not limit:
            raise ValueError(f"{address} has no small quota to fill")
        used_kib, _ = self.quota(address)
        if percent < 100:
            want = limit * percent // 100 - used_kib * 1024 - 200
            if want > 0:
                self._save(address, want)
            return
        big = limit - used_kib * 1024 - 12 * 1024
        if big > 0:
            self._save(address, big)
        for size in (8 * 1024, 1024, 120):
            for _ in range(200):
                if not self._save(address, size):
                    break

    def empty(self, address: str) -> None:
        """Delete every message of ``address`` and recompute its quota."""
        self.doveadm("expunge", "-u", address, "mailbox", "*", "all")
        self.doveadm("quota", "recalc", "-u", address)

    def reset(self) -> None:
        """Empty every mailbox that has mail (the default users; bulk users left alone)."""
        for u in self.users[:20]:
            self.empty(u.address)


def start_mailstack(
    directory: Path | None = None,
    *,
    users: list[tuple[str, str, str]] | None = None,
    bulk: int = 0,
    bulk_quota: str = "10M",
    bulk_domain: str = "bulk.example",
    quota_warning_command: str = "",
    quota_warning_script: str = "",
    quota_warning_user: str = "",
) -> MailStack:
    """Start a stack; ``users`` as (address, password, quota like '200K' or '')."""
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="pwms-dir-", dir="/tmp"))
    opts = argparse.Namespace(
        smtp_port=0,
        rcpt_port=0,
        imap_port=0,
        quota_status_port=0,
        user=[f"{a}:{p}:{q}" for a, p, q in users] if users else None,
        bulk=bulk,
        bulk_quota=bulk_quota,
        bulk_domain=bulk_domain,
        instance_name="",
        quota_warning_script=quota_warning_script,
        quota_warning_command=quota_warning_command,
        quota_warning_user=quota_warning_user,
    )
    state = script.start(directory, opts)
    return MailStack(directory, state)


_running: list[MailStack] = []


@atexit.register
def _stop_leftovers() -> None:
    """Stop stacks a crashed session left running (daemons outlive the test process)."""
    for stack in _running:
        with contextlib.suppress(Exception):
            stack.stop()


@pytest.fixture(scope="session")
def mailstack_factory() -> Iterator[Callable[..., MailStack]]:
    """Start extra stacks with :func:`start_mailstack`'s arguments; all stop at session end."""
    started: list[tuple[MailStack, bool]] = []

    def make(**kwargs: Any) -> MailStack:
        require(available(), "postfix + dovecot (scripts/mailstack install), as root")
        own_dir = "directory" not in kwargs
        stack = start_mailstack(**kwargs)
        started.append((stack, own_dir))
        _running.append(stack)
        return stack

    yield make
    for stack, own_dir in started:
        stack.stop()
        _running.remove(stack)
        if own_dir:
            shutil.rmtree(stack.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def mailstack(mailstack_factory: Callable[..., MailStack]) -> MailStack:
    """The shared stack with the default users (see module docstring)."""
    return mailstack_factory()


def dump(stack: MailStack) -> str:
    """Everything useful for a failing test's message."""
    return json.dumps({k: v for k, v in stack.state.items() if k != "users"}, indent=2)
