"""Issue 11 item 4: stalled connections cannot starve the form endpoint.

Against a real ``postwatch serve`` process, with real sockets. Before: 3,000 stalled connections
(dripping bodies, unfinished headers, idle) all stayed open; with 512 file descriptors, 600 idle
connections made every form post fail with a reset; 100 concurrent 10 MB uploads took RSS to
1.1 GB. Now stalled connections are closed after ``[server] header_timeout`` / ``body_timeout``,
open connections are capped (the longest-waiting one makes room for a new visitor), and large
bodies share a byte budget (503 past it).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.intake.serving import Serve, free_port, write_config

pytestmark = pytest.mark.slow

FORM = {"name": "Anna", "email": "anna@example.org", "message": "a lead"}


def serve(tmp_path: Path, *, nofile: int | None = None, **server: object) -> Serve:
    port = free_port()
    db = f"sqlite:///{tmp_path / 'postwatch.db'}"
    return Serve(write_config(tmp_path / "postwatch.toml", db, port, server=server), port,
                 nofile=nofile)


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return s


def closed_by_server(s: socket.socket, within: float) -> bool:
    """True when the server closes ``s`` (EOF or reset) within ``within`` seconds; any reply
    it sends first (a 408, 431 or 503) is read and skipped."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            if not s.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def post_form(base: str) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=20) as c:
        return c.post("/f/contact", data=FORM)


class Dripper:
    """Sends one byte every half second on each socket until it fails (the slowloris)."""

    def __init__(self, socks: list[socket.socket], byte: bytes) -> None:
        self.socks = list(socks)
        self.byte = byte
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.socks and not self.stop.wait(0.5):
            for s in list(self.socks):
                try:
                    s.send(self.byte)
                except OSError:
                    self.socks.remove(s)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """One server for the tests below (starting one takes seconds on a busy machine)."""
    server = serve(
        tmp_path_factory.mktemp("shared"),
        max_connections=100,
        header_timeout="30s",
        body_timeout="60s",
        keep_alive_timeout="1s",
        max_body_in_flight_kb=1024,
    )
    yield server
    assert server.terminate() == 0, server.output()[-3000:]


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


def test_600_stalled_connections_on_512_fds_cost_no_submission(
    tmp_path: Path, sockets: list[socket.socket]
) -> None:
    server = serve(tmp_path, nofile=512, header_timeout="2s", body_timeout="3s")
    try:
        idle, headers, bodies = [], [], []
        for i in range(600):
            s = connect(server.port)
            sockets.append(s)
            if i % 3 == 0:
                idle.append(s)  # connects and says nothing
            elif i % 3 == 1:
                s.send(b"POST /f/contact HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                headers.append(s)  # never finishes its headers
            else:
                s.send(
                    b"POST /f/contact HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n"
                    b"Content-Length: 100000\r\n\r\nname="
                )
                bodies.append(s)  # never finishes its body
        drip_h, drip_b = Dripper(headers, b"a"), Dripper(bodies, b"b")
        try:
            started = time.monotonic()
            r = post_form(server.base)
            assert r.status_code == 303, (r.status_code, r.text, server.output()[-2000:])
            assert time.monotonic() - started < 10  # generous: a form post is not queued
            # every stalled connection is closed by the server, dripping or not
            still_open = [s for s in sockets if not closed_by_server(s, within=15)]
            assert still_open == [], f"{len(still_open)} stalled connections still open"
        finally:
            drip_h.close()
            drip_b.close()
        assert post_form(server.base).status_code == 303
    finally:
        assert server.terminate() == 0, server.output()[-3000:]


def test_connection_cap_makes_room_for_a_new_visitor(
    shared: Serve, sockets: list[socket.socket]
) -> None:
    server = shared
    sockets.extend(connect(server.port) for _ in range(150))
    r = post_form(server.base)
    assert r.status_code == 303, server.output()[-2000:]
    # long before the 30 s header timeout, the oldest waiting ones were closed for the cap
    closed = sum(closed_by_server(s, within=0.2) for s in sockets[:60])
    assert closed >= 50
    assert not any(closed_by_server(s, within=0.05) for s in sockets[-40:])


def test_large_bodies_share_a_byte_budget(shared: Serve, sockets: list[socket.socket]) -> None:
    server = shared
    body = "&".join(f"f{i}=" + "x" * 2990 for i in range(200)).encode()  # 600 KB
    head = (
        b"POST /f/contact HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    first = connect(server.port)
    sockets.append(first)
    first.sendall(head + body[:50_000])
    time.sleep(0.5)
    second = connect(server.port)
    sockets.append(second)
    second.sendall(head + body[:50_000])
    second.settimeout(10)
    reply = second.recv(65536)
    assert reply.startswith(b"HTTP/1.1 503"), reply
    assert b"retry-after" in reply.lower()
    # a small form post is never refused for memory
    assert post_form(server.base).status_code == 303
    # the first upload is still served when it completes
    first.sendall(body[50_000:])
    first.settimeout(10)
    assert first.recv(65536).startswith(b"HTTP/1.1 303")


def test_oversized_headers_and_idle_keep_alive_are_closed(
    shared: Serve, sockets: list[socket.socket]
) -> None:
    server = shared
    big = connect(server.port)
    sockets.append(big)
    try:
        big.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 200_000)
    except OSError:
        pass  # the server may close before it has read everything: that is the point
    assert closed_by_server(big, within=5)
    kept = connect(server.port)
    sockets.append(kept)
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    kept.settimeout(5)
    assert kept.recv(65536).startswith(b"HTTP/1.1 200")
    assert closed_by_server(kept, within=5)  # idle keep-alive: closed after 1 s
