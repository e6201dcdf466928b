"""The HTML report in a real headless Chromium: it renders, shows the answer, fetches nothing.

Install Chromium with scripts/install-chromium.sh.  Chromium's own background requests are sent
to a refused loopback proxy and its resolver answers nothing, so no traffic leaves the machine;
the page's requests are told apart by their initiator (a file:// page is the opaque origin
"null").  A page with an <img src="http://..."> is the positive control of the detector.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from postwatch.cli import app
from tests.forensics import GYM_QUERY
from tests.support import require

LOGS = Path(__file__).parent.parent / "fixtures" / "logs" / "gym"


def render(page: Path, tmp: Path) -> tuple[str, list[str]]:
    """The DOM after loading ``page``, and the URLs the page itself asked for."""
    netlog = tmp / "net.json"
    cmd = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--no-pings",
        "--disable-breakpad",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=http://127.0.0.1:1",
        f"--user-data-dir={tmp / 'profile'}",
        f"--log-net-log={netlog}",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = json.loads(netlog.read_text())
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    fetched = []
    for event in log.get("events", []):
        params = event.get("params") or {}
        if names.get(event["type"]) == "URL_REQUEST_START_JOB":
            initiator = str(params.get("initiator", ""))
            if initiator == "null" or initiator.startswith("file:"):
                fetched.append(str(params.get("url")))
    return proc.stdout, fetched


def test_report_renders_and_fetches_nothing(tmp_path: Path) -> None:
    require(shutil.which("chromium") is not None, "chromium (scripts/install-chromium.sh)")
    hostile = "<img/src=http://192.0.2.1/pixel.png>@evil.example"
    log = (LOGS / "mail.log.1").read_text().replace("ben@visitor.example", hostile)
    (tmp_path / "mail.log").write_text(log)
    html = tmp_path / "report.html"
    res = CliRunner().invoke(
        app,
        [
            "investigate",
            "--quiet",
            "--mail-log",
            str(tmp_path / "mail.log"),
            "--form-path",
            "/contact",
            *GYM_QUERY,
            "--json",
            str(tmp_path / "r.json"),
            "--html",
            str(html),
        ],
    )
    assert res.exit_code == 0, res.output
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://192.0.2.1/x.png"></body></html>')
    _, control_fetched = render(control, tmp_path / "c")
    assert control_fetched == ["http://192.0.2.1/x.png"]  # the detector sees page fetches

    dom, fetched = render(html, tmp_path / "r")
    assert fetched == []
    assert "form mails reached info@gym.example" in dom
    assert "<img" not in dom  # the hostile address is text, not an element
    assert "&lt;img/src=http://192.0.2.1/pixel.png&gt;@evil.example" in dom
    assert "<svg" in dom
