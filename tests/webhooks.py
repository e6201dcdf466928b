"""A real webhook receiver for tests: an HTTP server on a free loopback port that keeps every
request (what a contact's ``json://`` / ``form://`` channel delivered)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


class WebhookSink:
    """An HTTP server on a free loopback port that keeps every request it gets."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_paths: set[str] = set()
        #: requests to these paths wait until ``release`` is set (a channel that hangs)
        self.hang_paths: set[str] = set()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.arrived = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ctype = self.headers.get("Content-Type", "")
                body: Any
                if "json" in ctype:
                    body = json.loads(raw or b"{}")
                else:
                    body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                with sink._lock:
                    sink.requests.append(
                        {"path": self.path, "body": body, "headers": dict(self.headers)}
                    )
                sink.arrived.set()
                if self.path in sink.hang_paths:
                    sink.release.wait(30)
                code = 500 if self.path in sink.fail_paths else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, scheme: str = "json") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def to(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"] == "/" + path.lstrip("/")]

    def titles(self, path: str) -> list[str]:
        return [str(r["body"].get("title")) for r in self.to(path)]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
