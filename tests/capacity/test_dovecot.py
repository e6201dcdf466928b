"""Against a real Dovecot with quota (the project's mail stack): IMAP, doveadm (CLI and HTTP
API) and Maildir readings, real deliveries through Postfix crossing levels, and Dovecot's own
quota_warning script calling ``postwatch hook quota-warning``."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import postwatch
from postwatch.capacity.core import store_quota_readings
from postwatch.capacity.doveadm import DoveadmSource
from postwatch.capacity.imap import ImapSource
from postwatch.capacity.maildir import MaildirSource
from postwatch.capacity.sources import QuotaReading, QuotaTarget, read_quotas
from postwatch.config import Config, QuotaSourceConfig, config_from_dict
from postwatch.store import Database
from postwatch.store.events import fetch_events
from tests.mailstack import MailStack
from tests.smtpd import make_self_signed

pytestmark = pytest.mark.mailstack

LIMIT = 200 * 1024
USERS = [
    ("cap@gym.example", "cap-pw", "200K"),
    ("agree@gym.example", "agree-pw", "500K"),
    ("hook@gym.example", "hook-pw", "200K"),
]
SRC = str(Path(postwatch.__file__).resolve().parent.parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def hookdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pwcap-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    for p in sorted(d.rglob("*"), reverse=True):
        p.unlink() if not p.is_dir() else p.rmdir()
    d.rmdir()


@pytest.fixture(scope="module")
def stack(mailstack_factory: Callable[..., MailStack], hookdir: Path) -> MailStack:
    """A stack whose quota_warning script runs ``postwatch hook quota-warning``."""
    command = (
        f"env PYTHONPATH={SRC} {sys.executable} -m postwatch hook quota-warning "
        f"--config {hookdir / 'postwatch.toml'}"
    )
    st = mailstack_factory(users=USERS, quota_warning_command=command, quota_warning_user="root")
    # the script runs as root (the venv may not be readable by "mail"); the mail stack keeps
    # its socket reachable for the lmtp/imap processes, which run as "mail"
    fixed = st.dovecot_conf.read_text()
    # doveadm's HTTP API on a loopback port, for the doveadm_url transport
    port = free_port()
    # TLS: a self-signed certificate, IMAPS on its own port and STARTTLS on the IMAP port
    tls_port = free_port()
    cert, key = make_self_signed(hookdir, "127.0.0.1")
    key.chmod(0o644)
    fixed = fixed.replace("ssl = no\n", f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\n", 1)
    fixed = fixed.replace(
        "  inet_listener imaps {\n    port = 0\n",
        f"  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {tls_port}\n",
        1,
    )
    assert f"port = {tls_port}" in fixed and "ssl = yes" in fixed
    with open(st.dovecot_conf, "w") as fh:
        fh.write(fixed)
        fh.write(
            "doveadm_password = dovead-pw\n"
            "service doveadm {\n  inet_listener http {\n"
            f"    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n"
        )
    st.doveadm("reload")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    st.state["doveadm_http_port"] = port
    st.state["imaps_port"] = tls_port
    st.state["ca_file"] = str(cert)
    return st


def home(stack: MailStack, address: str) -> Path:
    local, domain = address.split("@")
    return Path(stack.state["vmail"]) / domain / local


def targets(stack: MailStack, address: str, *, limit: int | None = None) -> list[QuotaTarget]:
    pw = stack.password(address)
    imap = QuotaSourceConfig(
        source="imap",
        host="127.0.0.1",
        port=stack.imap_port,
        user=address,
        password=pw,
        tls="none",
    )
    dove = QuotaSourceConfig(source="doveadm", user=address, doveadm_config=stack.dovecot_conf)
    http = QuotaSourceConfig(
        source="doveadm",
        user=address,
        doveadm_url=f"http://127.0.0.1:{stack.state['doveadm_http_port']}",
        password="dovead-pw",
    )
    mdir = QuotaSourceConfig(source="maildir", path=home(stack, address))
    return [QuotaTarget("gym", address, c, limit) for c in (imap, dove, http, mdir)]


def config(db: Database, hookdir: Path, address: str, *, port: int | None = None) -> Config:
    """The test's config; also written where Dovecot's hook script reads it."""
    listen = f"127.0.0.1:{port or free_port()}"
    data: dict[str, Any] = {
        "server": {"listen": listen},
        "database": {"url": db.url},
        "accounts": [
            {"id": "gym", "mailboxes": [{"address": address, "limit_mb": LIMIT / 1024 / 1024}]}
        ],
    }
    body = (
        f'[server]\nlisten = "{listen}"\n[database]\nurl = "{db.url}"\n'
        f'[[accounts]]\nid = "gym"\n[[accounts.mailboxes]]\naddress = "{address}"\n'
    )
    (hookdir / "postwatch.toml").write_text(body)
    (hookdir / "postwatch.toml").chmod(0o644)
    return config_from_dict(data, hookdir / "postwatch.toml")


def deliver_to(stack: MailStack, address: str, percent: float) -> None:
    """Send real mail through Postfix (LMTP into Dovecot) until doveadm shows >= percent."""
    limit_kib = stack.user(address).quota_bytes // 1024
    for _ in range(40):
        used, _lim = stack.quota(address)
        if used * 100 >= percent * limit_kib:
            return
        want = int((percent + 1.0) * limit_kib * 1024 / 100) - used * 1024 - 1200
        size = max(500, min(want, 30_000))
        since = stack.log_offset()
        stack.send("sender@example.test", address, size=size)
        stack.wait_log(rf"to=<{re.escape(address)}>.*status=sent", since=since)
    raise AssertionError(f"could not fill {address} to {percent}%")


def wait_hook(stack: MailStack, hookdir: Path, address: str, percent: int, since: int) -> None:
    """Wait until Dovecot ran the quota_warning script for ``address``/``percent`` and the
    ``postwatch hook`` it started (recognised by this module's config path) has exited."""
    stack.wait_log(
        rf" {re.escape(address)} {percent}$",
        log=stack.quota_warning_log,
        since=since,
        timeout=30,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not hook_running(hookdir):
            return
        time.sleep(0.05)
    raise AssertionError("postwatch hook quota-warning did not finish in 30 s")


def hook_running(hookdir: Path) -> bool:
    marker = str(hookdir / "postwatch.toml").encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmd and b"quota-warning" in cmd:
            return True
    return False


def hook_log_offset(stack: MailStack) -> int:
    try:
        return os.path.getsize(stack.quota_warning_log)
    except FileNotFoundError:
        return 0


def poll(db: Database, cfg: Config, ts: list[QuotaTarget]) -> list[QuotaReading]:
    readings = read_quotas(ts, timeout=timedelta(seconds=20))
    store_quota_readings(cfg, db, readings)
    return readings


# ----------------------------------------------------------------------------------- tests
def test_imap_doveadm_http_and_maildir_agree_with_doveadm(stack: MailStack) -> None:
    addr = "agree@gym.example"
    stack.empty(addr)
    sizes = [3_000, 9_000, 20_000, 45_000, 7_000]
    for size in sizes:
        since = stack.log_offset()
        stack.send("sender@example.test", addr, size=size)
        stack.wait_log(rf"to=<{re.escape(addr)}>.*status=sent", since=since)
    used_kib, limit_kib = stack.quota(addr)
    truth = used_kib * 1024
    one_message = max(sizes) + 2048  # a message plus KiB rounding and headers
    readings = read_quotas(targets(stack, addr, limit=500 * 1024))
    assert [r.source for r in readings] == ["imap", "doveadm", "doveadm", "maildir"]
    for r in readings:
        assert r.ok, r.error
        assert r.used_bytes is not None
        assert abs(r.used_bytes - truth) <= one_message, (r.source, r.used_bytes, truth)
        assert r.limit_bytes == limit_kib * 1024 == 500 * 1024
    # IMAP and doveadm report Dovecot's own counter: exact
    assert readings[0].used_bytes == readings[1].used_bytes == readings[2].used_bytes == truth
    assert readings[3].messages == len(sizes)


def test_doveadm_reads_all_users_in_one_call(stack: MailStack) -> None:
    many = [
        QuotaTarget(
            "gym", a, QuotaSourceConfig(source="doveadm", doveadm_config=stack.dovecot_conf)
        )
        for a, _p, _q in USERS
    ]
    readings = DoveadmSource().read(many)
    assert all(r.ok for r in readings), [r.error for r in readings]
    assert {r.mailbox: r.limit_bytes for r in readings}["agree@gym.example"] == 500 * 1024


def test_sources_that_fail_say_why(stack: MailStack, tmp_path: Path) -> None:
    addr = "cap@gym.example"
    wrong_pw = QuotaSourceConfig(
        source="imap",
        host="127.0.0.1",
        port=stack.imap_port,
        user=addr,
        password="not-the-password",
        tls="none",
    )
    r = ImapSource().read_one(QuotaTarget("gym", addr, wrong_pw))
    assert not r.ok and r.used_bytes is None and r.error
    assert "not-the-password" not in r.error and "uthentication" in r.error
    unknown = QuotaTarget(
        "gym",
        "ghost@gym.example",
        QuotaSourceConfig(source="doveadm", doveadm_config=stack.dovecot_conf),
    )
    r = DoveadmSource().read([unknown])[0]
    assert not r.ok and r.error and "unknown" in r.error
    bad_http = QuotaTarget(
        "gym",
        addr,
        QuotaSourceConfig(
            source="doveadm",
            doveadm_url=f"http://127.0.0.1:{stack.state['doveadm_http_port']}",
            password="wrong",
        ),
    )
    r = DoveadmSource().read([bad_http])[0]
    assert not r.ok and r.error and "401" in r.error
    missing = QuotaTarget("gym", addr, QuotaSourceConfig(source="maildir", path=tmp_path / "x"))
    assert not MaildirSource().read_one(missing).ok


def test_crossing_80_and_95_gives_one_event_each(
    stack: MailStack, db: Database, hookdir: Path
) -> None:
    """Real deliveries cross 80 % and 95 %; IMAP, doveadm (CLI and HTTP) and Maildir readings
    and Dovecot's own quota_warning hook (which writes to the store: no service runs) all see
    it, and each crossing is said exactly once."""
    addr = "cap@gym.example"
    stack.empty(addr)
    cfg = config(db, hookdir, addr)
    ts = targets(stack, addr, limit=LIMIT)
    poll(db, cfg, ts)
    with db.session(readonly=True) as s:
        assert fetch_events(s, account="gym") == []

    for level in (80, 95):
        since = hook_log_offset(stack)
        deliver_to(stack, addr, level + 1)
        for _ in range(3):
            readings = poll(db, cfg, ts)
            assert all(r.ok and r.percent and r.percent >= level for r in readings), readings
        wait_hook(stack, hookdir, addr, level, since)
        poll(db, cfg, ts)
    with db.session(readonly=True) as s:
        evs = fetch_events(s, account="gym")
    said = [(e.kind, e.data["level"]) for e in evs]
    assert said == [("quota_warning", 80), ("quota_warning", 95)], [e.data for e in evs]
    assert all(e.mailbox == addr for e in evs)
    assert "NOT RECORDED" not in stack.dovecot_log.read_text(errors="replace")

    stack.empty(addr)
    poll(db, cfg, ts)
    with db.session(readonly=True) as s:
        assert [e.kind for e in fetch_events(s, account="gym")][-1] == "quota_ok"


async def test_dovecot_quota_warning_hook_posts_to_the_service(
    stack: MailStack, db: Database, hookdir: Path
) -> None:
    import asyncio

    from postwatch.app import running

    addr = "hook@gym.example"
    stack.empty(addr)
    port = free_port()
    cfg = config(db, hookdir, addr, port=port)
    async with running(cfg, db):
        for _ in range(200):
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        since = hook_log_offset(stack)
        await asyncio.to_thread(deliver_to, stack, addr, 81)
        await asyncio.to_thread(wait_hook, stack, hookdir, addr, 80, since)
        # the service got it over HTTP: nothing in Dovecot's log says the hook failed
        assert "NOT RECORDED" not in stack.dovecot_log.read_text(errors="replace")
    with db.session(readonly=True) as s:
        evs = fetch_events(s, kinds=["quota_warning"], mailbox=addr)
    assert len(evs) == 1
    assert evs[0].data["via"] == "dovecot_hook" and evs[0].data["level"] == 80
    assert evs[0].account == "gym"


def test_quota_cli_against_real_dovecot(stack: MailStack, db: Database, hookdir: Path) -> None:
    from typer.testing import CliRunner

    from postwatch.cli import app

    addr = "agree@gym.example"
    conf = hookdir / "cli.toml"
    conf.write_text(
        f'[database]\nurl = "{db.url}"\n[[accounts]]\nid = "gym"\n'
        f'[[accounts.mailboxes]]\naddress = "{addr}"\n'
        f'quota = {{ source = "imap", host = "127.0.0.1", port = {stack.imap_port}, '
        f'user = "{addr}", password_env = "PW_TEST_IMAP", tls = "none" }}\n'
        f'[[accounts.mailboxes]]\naddress = "cap@gym.example"\n'
        f'quota = {{ source = "doveadm", doveadm_config = "{stack.dovecot_conf}" }}\n'
    )
    res = CliRunner().invoke(
        app,
        ["quota", "-c", str(conf), "--poll", "--json"],
        env={"PW_TEST_IMAP": stack.password(addr)},
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    rows = {r["mailbox"]: r for r in json.loads(res.stdout)}
    used, limit = stack.quota(addr)
    assert rows[addr]["used_bytes"] == used * 1024 and rows[addr]["limit_bytes"] == limit * 1024
    assert rows["cap@gym.example"]["error"] is None
    assert stack.password(addr) not in res.output


@pytest.mark.parametrize("tls", ["tls", "starttls"])
def test_imap_over_tls_and_starttls(stack: MailStack, tls: str) -> None:
    addr = "agree@gym.example"
    port = stack.state["imaps_port"] if tls == "tls" else stack.imap_port
    cfg = QuotaSourceConfig(
        source="imap",
        host="127.0.0.1",
        port=port,
        user=addr,
        password=stack.password(addr),
        tls=tls,
        ca_file=stack.state["ca_file"],
    )
    r = ImapSource().read_one(QuotaTarget("gym", addr, cfg))
    assert r.ok, r.error
    assert r.used_bytes == stack.quota(addr)[0] * 1024
    # without the CA the self-signed certificate is refused, with a clear reason
    untrusted = cfg.model_copy(update={"ca_file": None})
    r = ImapSource().read_one(QuotaTarget("gym", addr, untrusted))
    assert not r.ok and r.error and "certificate not trusted" in r.error
