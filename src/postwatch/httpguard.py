"""Connection limits and timeouts for the HTTP server (``postwatch serve``).

uvicorn closes an idle keep-alive connection, but it keeps a connection that never finishes its
headers, or drips its body, open forever, accepts connections until the process runs out of file
descriptors (then every new visitor gets a reset), and buffers any number of large bodies at
once. This module is the one rule for all of that; the composition root plugs it in with
:func:`uvicorn_options` (a protocol class for uvicorn) and :meth:`ConnectionGuard.asgi`.

Each open connection is in one phase:

``waiting``  connected, or done with its previous response, and its request headers are not
             complete yet. It must complete them within ``header_timeout`` (a total, not an idle
             time: dripping a byte a second does not extend it), in at most
             :data:`MAX_HEADER_BYTES`; otherwise it is closed (431 for oversized headers).
             An idle keep-alive connection is also closed after uvicorn's ``keep_alive_timeout``.
``body``     the app runs and the request body is still arriving. The whole body must arrive
             within ``body_timeout`` of the headers, otherwise the connection is closed (the
             app sees the client go away: nothing is stored, nothing acknowledged).
``app``      the body is complete and the app is working on the reply: no client timeout.

Guarantees:

- At most ``max_connections`` connections are open (lowered at start-up to fit the process's
  file-descriptor limit, see :func:`fit_connection_cap`). A new connection past the cap makes
  room by closing the connection that has been ``waiting`` longest, else the one that has been
  in ``body`` longest (more than a second); only when every connection is working on a reply
  does the new one get a ``503`` with ``Retry-After``. So a stalled client never costs another
  visitor her submission; at worst it costs itself.
- Bodies of up to :data:`SMALL_BODY` bytes (every ordinary form post) are never refused for
  memory. Larger bodies share ``max_body_in_flight_kb``: a request whose ``Content-Length``
  does not fit gets ``503`` with ``Retry-After`` before its body is read; a chunked body that
  outgrows the budget is cut off (the app sees the client go away).

Failure modes: connections are identified by their peer address as the app sees it, so the
server must run with uvicorn's own proxy-header rewriting off (postwatch reads forwarded
headers itself, see :mod:`postwatch.intake.spam`). A connection the guard does not know (no
peer address) is served without limits. Counters: ``postwatch_http_connections_closed_total``
by ``why``, gauge ``postwatch_http_connections_open``.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from enum import StrEnum
from typing import Any

from prometheus_client import Counter, Gauge
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postwatch.config import ServerConfig

log = logging.getLogger("postwatch.http")

#: bytes a request's headers may take (uvicorn's parsers have no limit of their own)
MAX_HEADER_BYTES = 64 * 1024
#: bodies up to this size never count against ``max_body_in_flight_kb``
SMALL_BODY = 64 * 1024
#: file descriptors kept free for the store, log files, syslog, SMTP and IMAP connections
RESERVED_FDS = 64
#: a connection in ``body`` longer than this may be closed to make room for a new one
BODY_EVICTABLE_AFTER = 1.0
RETRY_AFTER_S = 5

CLOSED = Counter(
    "postwatch_http_connections_closed_total",
    "HTTP connections closed by postwatch's limits",
    ["why"],
)
OPEN = Gauge("postwatch_http_connections_open", "open HTTP connections")


class Phase(StrEnum):
    WAITING = "waiting"  # before complete request headers (new or keep-alive)
    BODY = "body"  # the app runs; the request body is still arriving
    APP = "app"  # the body is complete; the app works on the reply


class Why(StrEnum):
    HEADER_TIMEOUT = "header_timeout"
    BODY_TIMEOUT = "body_timeout"
    HEADERS_TOO_LARGE = "headers_too_large"
    MADE_ROOM = "made_room"  # closed so that a new connection fits under max_connections
    BUSY = "busy"  # refused: every connection is working on a reply
    BODY_BUDGET = "body_budget"  # 503: large bodies in flight use the budget


def _reply(status: str, text: str, *, retry: bool = False) -> bytes:
    body = (text + "\n").encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n"
    )
    if retry:
        head += f"retry-after: {RETRY_AFTER_S}\r\n"
    return head.encode() + b"\r\n" + body


_BUSY = _reply("503 Service Unavailable", "server busy, please retry", retry=True)
_TOO_LARGE = _reply("431 Request Header Fields Too Large", "request headers too large")


class _Conn:
    __slots__ = (
        "head_bytes", "head_done", "key", "phase", "request", "since", "tail", "timer", "transport"
    )

    def __init__(self, key: tuple[str, int], transport: asyncio.Transport, now: float) -> None:
        self.key = key
        self.transport = transport
        self.phase = Phase.WAITING
        self.since = now
        self.timer: asyncio.TimerHandle | None = None
        self.head_bytes = 0
        self.head_done = False
        self.tail = b""
        self.request = 0  # a sequence number: a late "done" of an earlier request is ignored


class ConnectionGuard:
    """The limits of one server; every method runs on the server's event loop."""

    def __init__(self, server: ServerConfig, *, max_connections: int | None = None) -> None:
        self.header_timeout = server.header_timeout.total_seconds()
        self.body_timeout = server.body_timeout.total_seconds()
        self.max_connections = max_connections or server.max_connections
        self.body_budget = server.max_body_in_flight_kb * 1024
        self.body_in_flight = 0
        self.open: dict[tuple[str, int], _Conn] = {}
        # insertion-ordered: the first entry has been in its phase longest
        self._waiting: dict[tuple[str, int], _Conn] = {}
        self._body: dict[tuple[str, int], _Conn] = {}

    # ------------------------------------------------------------------ transport events
    def opened(self, transport: asyncio.Transport) -> tuple[str, int] | None:
        """A new connection: track it, making room first if needed. None: not tracked."""
        key = _peer_key(transport.get_extra_info("peername"))
        if key is None:
            return None
        loop = asyncio.get_running_loop()
        if len(self.open) >= self.max_connections and not self._make_room(loop.time()):
            CLOSED.labels(Why.BUSY).inc()
            transport.write(_BUSY)
            transport.close()
            return None
        conn = _Conn(key, transport, loop.time())
        self.open[key] = conn
        OPEN.set(len(self.open))
        self._enter(conn, Phase.WAITING)
        return key

    def received(self, key: tuple[str, int] | None, data: bytes) -> bool:
        """Bytes arrived; False when the connection was closed for oversized headers."""
        conn = self.open.get(key) if key is not None else None
        if conn is None or conn.phase is not Phase.WAITING or conn.head_done:
            return True
        # the blank line that ends the headers, also when split across two reads
        end = (conn.tail + data).find(b"\r\n\r\n")
        if end >= 0 and conn.head_bytes + end <= MAX_HEADER_BYTES:
            conn.head_done = True
            return True
        conn.head_bytes += len(data)
        conn.tail = data[-3:]
        if conn.head_bytes <= MAX_HEADER_BYTES:
            return True
        self._close(conn, Why.HEADERS_TOO_LARGE, _TOO_LARGE)
        return False

    def closed(self, key: tuple[str, int] | None, transport: asyncio.BaseTransport) -> None:
        conn = self.open.get(key) if key is not None else None
        if conn is None or conn.transport is not transport:  # already closed by the guard
            return
        del self.open[conn.key]
        self._leave(conn)
        OPEN.set(len(self.open))

    # ------------------------------------------------------------------ phases
    def _enter(self, conn: _Conn, phase: Phase) -> None:
        self._leave(conn)
        loop = asyncio.get_running_loop()
        conn.phase = phase
        conn.since = loop.time()
        if phase is Phase.WAITING:
            conn.head_bytes, conn.head_done, conn.tail = 0, False, b""
            self._waiting[conn.key] = conn
            conn.timer = loop.call_later(
                self.header_timeout, self._expire, conn, Why.HEADER_TIMEOUT
            )
        elif phase is Phase.BODY:
            self._body[conn.key] = conn
            conn.timer = loop.call_later(self.body_timeout, self._expire, conn, Why.BODY_TIMEOUT)

    def _leave(self, conn: _Conn) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        self._waiting.pop(conn.key, None)
        self._body.pop(conn.key, None)

    def _expire(self, conn: _Conn, why: Why) -> None:
        conn.timer = None
        if self.open.get(conn.key) is conn:
            self._close(conn, why)

    def _close(self, conn: _Conn, why: Why, reply: bytes = b"") -> None:
        CLOSED.labels(why).inc()
        self.open.pop(conn.key, None)
        self._leave(conn)
        OPEN.set(len(self.open))
        if reply and conn.phase is Phase.WAITING:
            conn.transport.write(reply)
            conn.transport.close()
        else:
            conn.transport.abort()  # free the descriptor now, whatever is buffered

    def _make_room(self, now: float) -> bool:
        victim = next(iter(self._waiting.values()), None)
        if victim is None:
            oldest = next(iter(self._body.values()), None)
            if oldest is not None and now - oldest.since > BODY_EVICTABLE_AFTER:
                victim = oldest
        if victim is None:
            return False
        self._close(victim, Why.MADE_ROOM)
        return True

    # ------------------------------------------------------------------ the ASGI side
    def asgi(self, app: ASGIApp) -> ASGIApp:
        """Wrap the served ASGI app: phases per request, and the large-body budget."""

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            conn = None
            if scope["type"] == "http":
                key = _peer_key(scope.get("client"))
                conn = self.open.get(key) if key is not None else None
            if conn is None:
                await app(scope, receive, send)
                return
            await self._serve(conn, app, scope, receive, send)

        return guarded

    async def _serve(
        self, conn: _Conn, app: ASGIApp, scope: Scope, receive: Receive, send: Send
    ) -> None:
        length, chunked = _body_size(scope)
        reserved = 0
        if length > SMALL_BODY:
            if self.body_in_flight + length > self.body_budget:
                CLOSED.labels(Why.BODY_BUDGET).inc()
                await _send_busy(send)
                return
            reserved = length
            self.body_in_flight += reserved
        conn.request += 1
        request = conn.request
        self._enter(conn, Phase.BODY if length or chunked else Phase.APP)
        counted = 0

        async def guarded_receive() -> Message:
            nonlocal counted, reserved
            msg = await receive()
            if msg["type"] != "http.request" or self.open.get(conn.key) is not conn:
                return msg
            if chunked:
                counted += len(msg.get("body", b""))
                if counted > SMALL_BODY and counted > reserved:
                    grow = counted - reserved
                    if self.body_in_flight + grow > self.body_budget:
                        self._close(conn, Why.BODY_BUDGET)
                        return {"type": "http.disconnect"}
                    self.body_in_flight += grow
                    reserved = counted
            if not msg.get("more_body", False) and conn.request == request:
                self._enter(conn, Phase.APP)
            return msg

        try:
            await app(scope, guarded_receive, send)
        finally:
            self.body_in_flight -= reserved
            if self.open.get(conn.key) is conn and conn.request == request:
                self._enter(conn, Phase.WAITING)


def _peer_key(peer: Any) -> tuple[str, int] | None:
    try:
        return (str(peer[0]), int(peer[1]))
    except (TypeError, IndexError, ValueError):
        return None


def _body_size(scope: Scope) -> tuple[int, bool]:
    """(Content-Length or 0, chunked?) of a request."""
    length, chunked = 0, False
    for name, value in scope.get("headers", ()):
        if name == b"content-length" and value.strip().isdigit():
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return length, chunked


async def _send_busy(send: Send) -> None:
    body = b"too many large uploads at once, please retry\n"
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(RETRY_AFTER_S).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def fit_connection_cap(wanted: int) -> int:
    """``wanted``, lowered to fit the file-descriptor limit. The soft limit is first raised
    towards the hard one (as far as ``wanted`` needs); a cap above what the process can open
    would turn every visitor past it into a reset instead of a closed stalled connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + RESERVED_FDS * 2
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    fitted = max(10, min(wanted, soft - RESERVED_FDS * 2))
    if fitted < wanted:
        log.warning(
            "max_connections lowered from %d to %d to fit the file-descriptor limit (%d)",
            wanted, fitted, soft,
        )
    return fitted


def guarded_protocol(guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class with the guard's connection events."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    base: Any = AutoHTTPProtocol

    class GuardedHTTPProtocol(base):
        _guard_key: tuple[str, int] | None = None
        _guard_transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._guard_transport = transport
            self._guard_key = guard.opened(transport)

        def data_received(self, data: bytes) -> None:
            transport = self._guard_transport
            if transport is not None and transport.is_closing():
                return  # refused or closed by the guard: nothing more is read
            if guard.received(self._guard_key, data):
                super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._guard_transport is not None:
                guard.closed(self._guard_key, self._guard_transport)
            super().connection_lost(exc)

    return GuardedHTTPProtocol


def uvicorn_options(server: ServerConfig, guard: ConnectionGuard) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` that put the guard in place."""
    return {
        "http": guarded_protocol(guard),
        "timeout_keep_alive": max(1, round(server.keep_alive_timeout.total_seconds())),
        # postwatch reads X-Forwarded-For itself, only from [server] trusted_proxies
        "proxy_headers": False,
        "backlog": 2048,
    }


def build_guard(server: ServerConfig) -> ConnectionGuard:
    """The guard of a server, with ``max_connections`` fitted to the descriptor limit."""
    return ConnectionGuard(server, max_connections=fit_connection_cap(server.max_connections))


__all__ = [
    "MAX_HEADER_BYTES",
    "SMALL_BODY",
    "ConnectionGuard",
    "Phase",
    "Why",
    "build_guard",
    "fit_connection_cap",
    "guarded_protocol",
    "uvicorn_options",
]
