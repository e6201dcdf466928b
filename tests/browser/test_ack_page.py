"""The acknowledge link in a real browser, against a running postwatch.

An alert fires, its notification reaches a local webhook sink, and the link in that message is
opened in Chromium: the page shows the alert, opening it acknowledges nothing (a mail scanner
that prefetches links must not), the button does, a reload says so; a tampered or expired link
gives a clear error page; a hostile mailbox name is shown as text and never runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from postwatch.alerts import links
from postwatch.alerts.clock import ManualClock
from postwatch.alerts.engine import Engine
from postwatch.store import Database
from postwatch.store.events import fetch_events
from postwatch.store.models_alerts import Alert
from tests.alerts.conftest import WebhookSink, gym_config
from tests.alerts.test_lifecycle import BOX, burst
from tests.browser.conftest import Browser, LiveServer, free_socket, shot

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def fire(db: Database, tmp_path: Path, sink: WebhookSink, public_url: str,
         box: str = BOX, **alerts: Any) -> tuple[int, str]:
    """One mailbox-full alert for ``box``; returns its id and the link from the owner's message."""
    cfg = gym_config(tmp_path, sink, public_url=public_url, **alerts)
    clock = ManualClock(datetime.now(UTC))
    burst(db, clock, 3, box=box)
    Engine(cfg, db, clock=clock).step()
    with db.session(readonly=True) as s:
        alert_id = s.scalars(select(Alert.id)).one()
    message = str(sink.to("owner")[0]["body"]["message"])
    link = next(w for w in message.split() if "/alerts/ack/" in w)
    return alert_id, link


def state(db: Database, alert_id: int) -> str:
    with db.session(readonly=True) as s:
        a = s.get(Alert, alert_id)
        assert a is not None
        return a.state


def acks(db: Database) -> list[dict[str, Any]]:
    with db.session(readonly=True) as s:
        return [dict(e.data) for e in fetch_events(s, kinds=["alert_acknowledged"])]


def test_ack_link_end_to_end(
    browser: Browser, db: Database, tmp_path: Path, sink: WebhookSink
) -> None:
    sock = free_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    alert_id, link = fire(db, tmp_path, sink, base)
    assert link.startswith(base + "/alerts/ack/")  # the link exactly as the owner got it
    cfg = gym_config(tmp_path, sink, public_url=base)
    with LiveServer(cfg, db, sock):
        tab = browser.tab(base, width=390, height=844)  # a phone
        page = tab.page
        resp = page.goto(link)
        assert resp is not None and resp.status == 200
        body = page.inner_text("body")
        assert BOX in body and "Sportschool Fit" in body
        assert "is vol" in body  # Marieke reads Dutch, as in her notification
        assert page.get_by_role("button", name="Bevestigen").is_visible()
        shot(tab, "ack-phone")
        # opening the link (and opening it again, as a scanner would) acknowledges nothing
        page.reload()
        assert state(db, alert_id) == "firing" and acks(db) == []
        # nothing on the page is wider than the phone's screen
        assert page.evaluate("document.documentElement.scrollWidth") <= 390

        with page.expect_navigation():
            page.get_by_role("button", name="Bevestigen").click()
        assert "bevestigd" in page.inner_text("body").lower()
        shot(tab, "ack-done")
        assert state(db, alert_id) == "acknowledged"
        [ev] = acks(db)
        assert ev["via"] == "link" and ev["alert"] == alert_id and "Marieke" in ev["by"]

        # a reload of the link shows it as acknowledged, with no button
        resp = page.goto(link)
        assert resp is not None and resp.status == 200
        assert "bevestigd" in page.inner_text("body").lower()
        assert page.get_by_role("button").count() == 0
        assert len(acks(db)) == 1
        assert tab.foreign == []


def test_ack_link_tampered_or_expired_shows_an_error_page(
    browser: Browser, sqlite_db: Database, tmp_path: Path, sink: WebhookSink
) -> None:
    db = sqlite_db
    sock = free_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    alert_id, link = fire(db, tmp_path, sink, base, ack_link_ttl="7d")
    cfg = gym_config(tmp_path, sink, public_url=base, ack_link_ttl="7d")
    old = links.make_token("test-secret-for-links", alert_id, "Marieke",
                           datetime.now(UTC) - timedelta(days=8))
    with LiveServer(cfg, db, sock):
        tab = browser.tab(base)
        page = tab.page
        resp = page.goto(link[:-3] + ("abc" if not link.endswith("abc") else "xyz"))
        assert resp is not None and resp.status == 400
        text = page.inner_text("body")
        assert "not valid" in text and "Traceback" not in text
        assert page.get_by_role("button").count() == 0
        shot(tab, "ack-tampered")
        resp = page.goto(f"{base}/alerts/ack/{old}")
        assert resp is not None and resp.status == 410
        assert "expired" in page.inner_text("body")
        assert page.get_by_role("button").count() == 0
        shot(tab, "ack-expired")
        assert state(db, alert_id) == "firing" and acks(db) == []
        assert tab.foreign == []


def test_hostile_mailbox_name_is_text_and_never_runs(
    browser: Browser, sqlite_db: Database, tmp_path: Path, sink: WebhookSink
) -> None:
    db = sqlite_db
    sock = free_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    box = HOSTILE + "@gym.example"
    alert_id, link = fire(db, tmp_path, sink, base, box=box)
    cfg = gym_config(tmp_path, sink, public_url=base)
    with LiveServer(cfg, db, sock):
        tab = browser.tab(base)
        page = tab.page
        page.goto(link)
        shot(tab, "ack-hostile")
        assert page.evaluate("window.__pwned") is None
        assert HOSTILE in page.inner_text("body")  # shown, as text
        assert page.locator("body script, body img").count() == 0
        with page.expect_navigation():
            page.get_by_role("button").click()
        assert page.evaluate("window.__pwned") is None
        assert state(db, alert_id) == "acknowledged"
        assert tab.foreign == []  # the onerror image never asked for "x"
