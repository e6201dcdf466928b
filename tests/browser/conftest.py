"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, a live postwatch.

Playwright's own browsers are never downloaded: the tests launch /usr/bin/chromium (install it
with scripts/install-chromium.sh).  Every page gets a request log; requests to anything but the
page's own origin (file:// or the loopback server under test) are aborted and kept in
``Browser.foreign`` so a test can assert that a page loads nothing from the network.
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from postwatch.app import serving_app
from postwatch.config import Config
from postwatch.store import Database
from tests.alerts.conftest import sink  # noqa: F401  (the webhook sink fixture)
from tests.support import require

CHROMIUM = "/usr/bin/chromium"
ARGS = [
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
    # nothing the browser itself wants leaves the machine: names do not resolve...
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    # ...and anything else goes to a refused proxy (loopback is never proxied)
    "--proxy-server=http://127.0.0.1:1",
]
#: where screenshots go when POSTWATCH_SCREENSHOTS is set (never committed)
SHOTS_ENV = "POSTWATCH_SCREENSHOTS"


@dataclass
class Tab:
    """A page plus what it asked for."""

    page: Any
    requests: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


class Browser:
    def __init__(self, browser: Any) -> None:
        self.browser = browser

    def tab(self, allow: str = "file://", *, width: int = 1100, height: int = 800,
            js: bool = True) -> Tab:
        """A fresh context and page; requests not starting with ``allow`` are aborted."""
        ctx = self.browser.new_context(
            viewport={"width": width, "height": height}, java_script_enabled=js
        )
        page = ctx.new_page()
        tab = Tab(page)

        def route(r: Any) -> None:
            url = str(r.request.url)
            tab.requests.append(url)
            if url.startswith(allow) or url.startswith("data:"):
                r.continue_()
            else:
                tab.foreign.append(url)
                r.abort()

        ctx.route("**/*", route)
        return tab


def have_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


# Module scope: Playwright's sync API keeps an event loop of its own while the browser is
# open, which must be gone before pytest-asyncio runs the async tests of other directories.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require(shutil.which("chromium") is not None, "chromium (scripts/install-chromium.sh)")
    require(have_playwright(), "playwright for Python (pip install playwright)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield Browser(b)
        b.close()


def free_socket() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s


class LiveServer:
    """postwatch's ASGI app served by uvicorn in a thread, on a socket bound beforehand."""

    def __init__(self, config: Config, db: Database, sock: socket.socket) -> None:
        import uvicorn

        self.sock = sock
        self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        app = serving_app(config, db)
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                return self
            self.thread.join(0.01)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def shot(tab: Tab, name: str) -> None:
    """Save a full-page screenshot when POSTWATCH_SCREENSHOTS names a directory."""
    import os

    where = os.environ.get(SHOTS_ENV)
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        tab.page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)
