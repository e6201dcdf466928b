"""The Debian package, end to end, as a hoster installs it (needs root, apt and the registry).

Build with scripts/build-deb, ``apt-get install ./postwatch_*.deb``, run it as its own user,
verify the systemd units, run the Dovecot hook as Dovecot's user, upgrade over itself (the
migration runs and the store keeps its rows), purge. Skipped unless POSTWATCH_TEST_DEB=1 or CI is
set: it installs into the real system (/opt/postwatch, /etc/postwatch, a `postwatch` user).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ("postwatch.service", "postwatch-worker@.service")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(2400),
    pytest.mark.skipif(
        not (os.environ.get("POSTWATCH_TEST_DEB") == "1" or os.environ.get("CI")),
        reason="installs a system package: set POSTWATCH_TEST_DEB=1 (CI runs it)",
    ),
]


def sh(*cmd: str, timeout: float = 900, check: bool = True,
       env: dict[str, str] | None = None, cwd: Path | None = None,
       ) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False,
                         env=env, cwd=cwd)
    if check:
        assert res.returncode == 0, f"{cmd}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def test_build_install_run_verify_upgrade_purge(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        pytest.fail("the package test needs root, apt-get and dpkg-deb")
    sh("dpkg", "--purge", "postwatch", check=False)  # a leftover of an interrupted run

    # build
    t0 = time.monotonic()
    out = sh(str(ROOT / "scripts" / "build-deb"), str(tmp_path / "dist"), timeout=1500)
    print(f"build-deb took {time.monotonic() - t0:.0f} s")
    deb = tmp_path / "dist" / out.stdout.strip().split("/")[-1]
    assert deb.is_file() and deb.name.startswith(f"postwatch_{version()}_")

    try:
        _install_and_check(deb, tmp_path)
    finally:
        sh("apt-get", "purge", "-y", "postwatch", check=False, timeout=300)
    assert sh("dpkg", "-s", "postwatch", check=False).returncode != 0
    for gone in ("/opt/postwatch", "/var/lib/postwatch", "/etc/postwatch", "/usr/bin/postwatch",
                 "/usr/lib/postwatch", "/lib/systemd/system/postwatch.service"):
        assert not os.path.lexists(gone), f"{gone} left after purge"


def _install_and_check(deb: Path, tmp_path: Path) -> None:
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    sh("apt-get", "install", "-y", f"./{deb.name}", cwd=deb.parent, env=env, timeout=600)
    assert sh("/usr/bin/postwatch", "--version").stdout.strip() == f"postwatch {version()}"

    # who owns what
    groups = sh("id", "-nG", "postwatch").stdout.split()
    assert {"postwatch", "adm", "postwatch-hook"} <= set(groups)
    conf = os.stat("/etc/postwatch/postwatch.toml")
    assert oct(conf.st_mode & 0o777) == "0o640" and conf.st_uid == 0
    assert sh("stat", "-c", "%U:%G %a", "/var/lib/postwatch").stdout.strip() == (
        "postwatch:postwatch 750")
    assert sh("stat", "-c", "%U:%G %a", "/etc/postwatch/hook-token").stdout.strip() == (
        "root:postwatch-hook 640")
    sh("runuser", "-u", "postwatch", "--", "postwatch", "check-config",
       "--config", "/etc/postwatch/postwatch.toml")

    # the demo as the service's own user, from a folder it cannot write
    res = sh("runuser", "-u", "postwatch", "--", "postwatch", "demo", "--fast", "--json",
             cwd=Path("/"), timeout=600)
    summary = json.loads(res.stdout)
    assert summary["lost"] == 0 and summary["people_told"] == 2

    # the units
    if not shutil.which("systemd-analyze"):
        sh("apt-get", "install", "-y", "systemd", env=env, timeout=600)
    units = [f"/lib/systemd/system/{u}" for u in UNITS]
    instance = tmp_path / "postwatch-worker@1.service"
    shutil.copy(units[1], instance)
    res = sh("systemd-analyze", "verify", *units, str(instance))
    assert res.stdout.strip() == "" and res.stderr.strip() == "", res.stdout + res.stderr
    for unit in units:
        text = Path(unit).read_text()
        for hardening in ("ProtectSystem=strict", "NoNewPrivileges=true",
                          "ReadWritePaths=/var/lib/postwatch", "User=postwatch"):
            assert hardening in text, (unit, hardening)

    _hook_as_dovecots_user()

    # upgrade over itself: postinst migrates, the store keeps what it had
    sh("apt-get", "install", "-y", "--reinstall", f"./{deb.name}", cwd=deb.parent, env=env,
       timeout=600)
    events = sh("runuser", "-u", "postwatch", "--", "postwatch", "events", "--config",
                "/etc/postwatch/postwatch.toml", "--kind", "quota_warning", "--json").stdout
    assert "dovecot_hook" in events


def _hook_as_dovecots_user() -> None:
    """The service (as postwatch, on the package's store) takes the hook's post made as the user
    Dovecot runs it as; a user outside the group postwatch-hook has no token and is refused."""
    hook_user = "dovecot" if sh("id", "dovecot", check=False).returncode == 0 else None
    if hook_user is None:  # no Dovecot here: a stand-in user in the same group
        hook_user = "pwhooktest"
        sh("adduser", "--quiet", "--system", "--no-create-home", hook_user, check=False)
        sh("adduser", "--quiet", hook_user, "postwatch-hook")
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="postwatch-hook-"))  # pytest's tmp is root's only
    config = folder / "postwatch.toml"
    config.write_text(
        f"""[server]
listen = "127.0.0.1:{port}"
[database]
url = "sqlite:////var/lib/postwatch/postwatch.db"
[capacity]
hook_token_file = "/etc/postwatch/hook-token"
[[accounts]]
id = "gym"
[[accounts.mailboxes]]
address = "info@gym.example"
quota = {{ source = "doveadm", user = "info@gym.example" }}
"""
    )
    os.chmod(folder, 0o755)
    os.chmod(config, 0o644)
    serve = subprocess.Popen(
        ["runuser", "-u", "postwatch", "--", "/opt/postwatch/bin/postwatch", "serve",
         "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                assert serve.poll() is None, serve.stderr.read() if serve.stderr else ""
                time.sleep(0.1)
        env = {"PATH": "/usr/bin:/bin", "POSTWATCH_URL": f"http://127.0.0.1:{port}"}
        ok = sh("runuser", "-u", hook_user, "--", "/usr/bin/env", *[f"{k}={v}" for k, v in
                env.items()], "/usr/lib/postwatch/quota-warning", "95", "info@gym.example")
        assert ok.stderr == "", ok.stderr
        denied = sh("runuser", "-u", "nobody", "--", "/usr/bin/env",
                    *[f"{k}={v}" for k, v in env.items()],
                    "/usr/lib/postwatch/quota-warning", "96", "info@gym.example")
        assert denied.returncode == 0  # never fails Dovecot's delivery...
        assert "token not readable" in denied.stderr and "HTTP 403" in denied.stderr  # ...says why
    finally:
        serve.terminate()
        serve.wait(30)
        shutil.rmtree(folder)
