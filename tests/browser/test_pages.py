"""The responsibilities sheet and the forensics report as files opened in Chromium.

Both are documents a hoster hands to a client: they must open from disk, show their key
content, print on paper, and load nothing from anywhere (every request other than the file
itself is aborted and recorded).
"""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from postwatch.alerts.sheet import html_sheet
from postwatch.cli import app
from tests.alerts.conftest import WebhookSink, gym_config
from tests.browser.conftest import Browser, shot

LOGS = Path(__file__).parent.parent / "fixtures" / "logs" / "gym"
HOSTILE = "<script>window.__pwned = 1</script>"


def test_responsibilities_sheet_in_the_browser(
    browser: Browser, tmp_path: Path, sink: WebhookSink
) -> None:
    contacts = [
        {"name": "Marieke " + HOSTILE, "role": "owner", "language": "nl",
         "channels": [sink.url("owner"), "mailto://info@gym.example"],
         "quiet_hours": "22:00-07:00", "timezone": "Europe/Amsterdam"},
        {"name": "Webbureau", "role": "webmaster", "channels": [sink.url("webmaster")]},
        {"name": "Hostingpartner ops", "role": "hoster",
         "channels": ["json://ops:hunter2secret@127.0.0.1:9/hook"]},
    ]
    cfg = gym_config(tmp_path, sink, contacts=contacts)
    page_file = tmp_path / "sheet.html"
    page_file.write_text(html_sheet(cfg, cfg.account("gym")), encoding="utf-8")
    tab = browser.tab("file://", width=1000)
    page = tab.page
    page.goto(page_file.as_uri())
    text = page.inner_text("body")
    assert "Responsibilities: Sportschool Fit" in text
    assert "info@gym.example" in text
    for who in ("Webbureau", "Hostingpartner ops", "Marieke " + HOSTILE):
        assert who in text
    assert "same mail path" in text  # the owner's own mailbox is marked as not used for it
    assert "hunter2secret" not in page.content()  # channel secrets are masked
    assert page.evaluate("window.__pwned") is None
    assert page.locator("body script").count() == 0
    # fits the page: no horizontal scrolling on a screen, readable on A4
    assert page.evaluate("document.documentElement.scrollWidth") <= 1000
    shot(tab, "sheet")
    page.emulate_media(media="print")
    shot(tab, "sheet-print")
    pdf = page.pdf(format="A4")
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1  # one page to attach to a contract
    assert tab.foreign == [] and tab.requests == [page_file.as_uri()]


def test_sheet_on_a_phone(browser: Browser, tmp_path: Path, sink: WebhookSink) -> None:
    cfg = gym_config(tmp_path, sink)
    page_file = tmp_path / "sheet.html"
    page_file.write_text(html_sheet(cfg, cfg.account("gym"), "nl"), encoding="utf-8")
    tab = browser.tab("file://", width=390, height=844)
    tab.page.goto(page_file.as_uri())
    assert "Verantwoordelijkheden" in tab.page.inner_text("h1")
    assert tab.page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(tab, "sheet-phone")
    assert tab.foreign == []


def investigate(tmp_path: Path) -> Path:
    html = tmp_path / "report.html"
    args = ["investigate", "--quiet"]
    for f in sorted(LOGS.glob("mail.log*")):
        args += ["--mail-log", str(f)]
    for f in sorted(LOGS.glob("other_vhosts_access.log*")):
        args += ["--access-log", str(f)]
    args += [
        "--form-path", "/contact", "--mailbox", "info@gym.example",
        "--form-sender", "wordpress@gym.example", "--year", "2026",
        "--timezone", "Europe/Berlin",
        "--json", str(tmp_path / "r.json"), "--html", str(html),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return html


def test_forensics_report_in_the_browser(browser: Browser, tmp_path: Path) -> None:
    html = investigate(tmp_path)
    tab = browser.tab("file://", width=1200)
    page = tab.page
    page.goto(html.as_uri())
    answer = page.locator(".answer")
    assert answer.is_visible()
    box = answer.bounding_box()
    assert box is not None and box["y"] < 400  # the answer is the first thing one reads
    assert "form mails reached info@gym.example" in answer.inner_text()
    assert page.locator("svg").count() >= 1
    for heading in ("Episodes of a full mailbox", "People whose sign-up did not arrive",
                    "Questions these logs cannot answer", "Evidence: the input files"):
        assert page.get_by_role("heading", name=heading).count() == 1
    assert page.evaluate("document.documentElement.scrollWidth") <= 1200
    shot(tab, "report")
    page.emulate_media(media="print")
    assert page.pdf(format="A4").startswith(b"%PDF")
    assert tab.foreign == [] and tab.requests == [html.as_uri()]


def test_forensics_report_on_a_phone(browser: Browser, tmp_path: Path) -> None:
    html = investigate(tmp_path)
    tab = browser.tab("file://", width=390, height=844)
    tab.page.goto(html.as_uri())
    assert tab.page.locator(".answer").is_visible()
    # the page itself fits the phone; only wide tables scroll inside their own box
    assert tab.page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(tab, "report-phone")
    assert tab.foreign == []
