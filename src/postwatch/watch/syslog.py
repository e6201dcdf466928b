"""A syslog listener for mail servers on other machines (rsyslog, syslog-ng, Vector).

UDP (one message per datagram) and TCP (RFC 6587: octet-counted ``LEN SP MSG`` framing or
newline-terminated messages, told apart per frame), RFC 5424 and RFC 3164 messages (including
rsyslog's forwarding format: a 3164 header with an RFC 3339 timestamp). Each message becomes
one log line in the shape the mail-log parsers read (``TIMESTAMP HOST PROGRAM[PID]: MSG``, with
an RFC 3339 timestamp), so forwarded lines and local files go through the same parsers.

Bad input (garbage, oversize frames, a client that never finishes a frame) is counted and
dropped; it never stops the listener.

With ``on_frame`` the listener does no parsing at all on the event loop: it hands each raw
frame to ``on_frame(data, peer)`` (the watch queues it for a worker thread, which calls
:func:`parse_syslog`), and with ``backlog`` a TCP client is not read from while
``backlog()`` is true (TCP flow control instead of loss; UDP cannot wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

log = logging.getLogger("postwatch.watch.syslog")

MAX_MESSAGE = 64 * 1024
#: TCP senders at once (each rsyslog/Vector keeps one connection); more are closed on accept
MAX_TCP_CLIENTS = 64
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}
_PRI_RE = re.compile(r"<(\d{1,3})>")
_3164_TS_RE = re.compile(r"([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d)(?:\.\d+)? ")
_3339_TS_RE = re.compile(r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?) ")
_TAG_RE = re.compile(r"([^\s\[:]{1,128})(?:\[([^\]\s]{1,64})\])?: ?")


@dataclass(frozen=True, slots=True)
class SyslogMessage:
    facility: int
    severity: int
    time: datetime
    hostname: str
    app: str
    procid: str
    msg: str
    protocol: str  # "rfc5424" | "rfc3164"

    def to_line(self) -> str:
        """The message as a log-file line: ``2026-11-29T18:00:00+00:00 host app[pid]: msg``."""
        prog = self.app or "-"
        if self.procid and self.procid != "-":
            prog += f"[{self.procid}]"
        return f"{self.time.isoformat()} {self.hostname or '-'} {prog}: {self.msg}"


def _nil(v: str) -> str:
    return "" if v == "-" else v


def _parse_3339(text: str) -> datetime | None:
    text = text.replace(" ", "T", 1)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _skip_sd(rest: str) -> str | None:
    """Skip RFC 5424 STRUCTURED-DATA (``-`` or ``[id k="v"]...``); None when malformed."""
    if rest.startswith("-"):
        return rest[1:]
    i = 0
    n = len(rest)
    while i < n and rest[i] == "[":
        i += 1
        in_quotes = False
        while i < n:
            c = rest[i]
            if c == "\\" and in_quotes:
                i += 2
                continue
            if c == '"':
                in_quotes = not in_quotes
            elif c == "]" and not in_quotes:
                break
            i += 1
        if i >= n:
            return None
        i += 1
    return rest[i:] if i else None


def parse_syslog(
    data: bytes | str, *, now: datetime | None = None, tz: tzinfo = UTC
) -> SyslogMessage | None:
    """Parse one RFC 5424 or RFC 3164 message; None when it is not syslog at all."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = text.rstrip("\r\n\x00")
    m = _PRI_RE.match(text)
    if m is None or int(m.group(1)) > 191:
        return None
    pri = int(m.group(1))
    rest = text[m.end() :]
    now = now or datetime.now(tz)
    if rest.startswith("1 "):
        parts = rest[2:].split(" ", 5)
        if len(parts) < 6:
            if len(parts) == 5:
                parts.append("-")
            else:
                return None
        ts, host, app, procid, _msgid, tail = parts
        stamp = now if ts == "-" else _parse_3339(ts)
        if stamp is None:
            return None
        msg = _skip_sd(tail)
        if msg is None:
            return None
        msg = msg[1:] if msg.startswith(" ") else msg
        msg = msg.removeprefix("\ufeff")
        return SyslogMessage(
            pri >> 3, pri & 7, stamp, _nil(host), _nil(app), _nil(procid), msg, "rfc5424"
        )
    # RFC 3164 (BSD): TIMESTAMP HOSTNAME TAG: MSG; rsyslog may send an RFC 3339 timestamp
    time: datetime | None = None
    m3 = _3164_TS_RE.match(rest)
    if m3 is not None and m3.group(1) in _MONTHS:
        month = _MONTHS[m3.group(1)]
        year = now.year
        # a December line received in January belongs to last year (and vice versa)
        if month == 12 and now.month == 1:
            year -= 1
        elif month == 1 and now.month == 12:
            year += 1
        try:
            time = datetime(
                year,
                month,
                int(m3.group(2)),
                int(m3.group(3)),
                int(m3.group(4)),
                int(m3.group(5)),
                tzinfo=tz,
            )
        except ValueError:
            return None
        rest = rest[m3.end() :]
    else:
        m4 = _3339_TS_RE.match(rest)
        if m4 is not None:
            time = _parse_3339(m4.group(1))
            rest = rest[m4.end() :]
    if time is None:
        time = now  # RFC 3164 section 4.3.2: no timestamp, the relay adds its own
    host = ""
    tag = _TAG_RE.match(rest)
    if tag is None or not rest[tag.end(1) :].startswith(("[", ":")):
        # HOSTNAME first, then TAG
        host, _, after = rest.partition(" ")
        tag = _TAG_RE.match(after)
        rest = after
    if tag is None:
        return SyslogMessage(pri >> 3, pri & 7, time, host, "", "", rest, "rfc3164")
    return SyslogMessage(
        pri >> 3,
        pri & 7,
        time,
        host,
        tag.group(1),
        tag.group(2) or "",
        rest[tag.end() :],
        "rfc3164",
    )


class FrameDecoder:
    """RFC 6587 framing on a TCP stream: octet counting or newline-terminated, per frame."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self.max_message = max_message
        self.dropped = 0

    def feed(self, data: bytes) -> list[bytes]:
        """The complete frames in what has arrived so far (the rest is kept for later).

        Frames are cut by position and the buffer is moved once per call, so a read full of
        small frames costs linear time."""
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        n = len(buf)
        pos = 0
        while pos < n:
            first = buf[pos]
            if first in b"\r\n\x00 ":
                pos += 1
                continue
            if 0x30 <= first <= 0x39:  # octet counting: LEN SP MSG
                sp = buf.find(b" ", pos, pos + 12)
                if sp < 0:
                    if n - pos >= 12:  # not a length: drop the line
                        pos = self._drop_line(buf, pos)
                        continue
                    break
                digits = bytes(buf[pos:sp])
                if not digits.isdigit():
                    pos = self._drop_line(buf, pos)
                    continue
                size = int(digits)
                if size > self.max_message:
                    self.dropped += 1
                    pos = n  # cannot resynchronise; start over
                    break
                if n < sp + 1 + size:
                    break
                out.append(bytes(buf[sp + 1 : sp + 1 + size]))
                pos = sp + 1 + size
                continue
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if n - pos > self.max_message:
                    self.dropped += 1
                    pos = n
                break
            out.append(bytes(buf[pos:nl]))
            pos = nl + 1
        if pos:
            del buf[:pos]
        return out

    def _drop_line(self, buf: bytearray, pos: int) -> int:
        """Count a bad frame and skip to the next line (or the end)."""
        self.dropped += 1
        nl = buf.find(b"\n", pos)
        return len(buf) if nl < 0 else nl + 1

    def flush(self) -> list[bytes]:
        """At end of stream: a last newline-less message."""
        rest = bytes(self._buf).strip(b"\r\n\x00 ")
        self._buf.clear()
        if rest and not rest[:1].isdigit():
            return [rest]
        return []


Handler = Callable[[SyslogMessage, str], None]
FrameHandler = Callable[[bytes, str], None]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, listener: SyslogListener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.listener.handle(data, addr[0])


class SyslogListener:
    """UDP and TCP listeners on one address; calls ``handler(message, peer)`` per message
    (or ``on_frame(data, peer)`` per raw frame, unparsed, when given)."""

    def __init__(
        self,
        listen: str,
        handler: Handler | None,
        *,
        protocols: tuple[str, ...] | list[str] = ("udp", "tcp"),
        tz: tzinfo = UTC,
        on_frame: FrameHandler | None = None,
        backlog: Callable[[], bool] | None = None,
        max_tcp_clients: int = MAX_TCP_CLIENTS,
    ) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port)
        if handler is None and on_frame is None:
            raise ValueError("SyslogListener needs a handler or on_frame")
        self.handler = handler
        self.on_frame = on_frame
        self.backlog = backlog
        self.protocols = tuple(protocols)
        self.tz = tz
        self.received = 0
        self.unparsed = 0
        self.udp_port: int | None = None
        self.tcp_port: int | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.max_tcp_clients = max_tcp_clients
        self.refused_clients = 0

    def handle(self, data: bytes, peer: str) -> None:
        self.received += 1
        if self.on_frame is not None:  # parsed elsewhere (off the event loop)
            self.on_frame(data, peer)
            return
        try:
            msg = parse_syslog(data, tz=self.tz)
        except Exception:  # never let one message stop the listener
            msg = None
        if msg is None or self.handler is None:
            self.unparsed += 1
            return
        try:
            self.handler(msg, peer)
        except Exception:
            log.exception("syslog handler failed on a message from %s", peer)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if "udp" in self.protocols:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(self.host, self.port)
            )
            self._udp = transport
            self.udp_port = transport.get_extra_info("sockname")[1]
        if "tcp" in self.protocols:
            # with port 0, take the UDP port for TCP too when it is free
            port = self.port or (self.udp_port or 0)
            try:
                self._tcp = await asyncio.start_server(self._client, self.host, port)
            except OSError:
                if self.port:
                    raise
                self._tcp = await asyncio.start_server(self._client, self.host, 0)
            self.tcp_port = self._tcp.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self.max_tcp_clients:  # a flood of connections: refuse the new
            self.refused_clients += 1
            if self.refused_clients in (1, 10, 100) or self.refused_clients % 1000 == 0:
                log.warning("syslog: %d TCP clients refused (limit %d)",
                            self.refused_clients, self.max_tcp_clients)
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        peer = str((writer.get_extra_info("peername") or ("?",))[0])
        decoder = FrameDecoder()
        try:
            while True:
                while self.backlog is not None and self.backlog():
                    await asyncio.sleep(0.05)  # flow control: the sender waits, nothing is lost
                data = await reader.read(65536)
                if not data:
                    break
                for frame in decoder.feed(data):
                    self.handle(frame, peer)
            for frame in decoder.flush():
                self.handle(frame, peer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.unparsed += decoder.dropped
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._conns.discard(task)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for t in list(self._conns):
                t.cancel()
            with contextlib.suppress(Exception):
                await self._tcp.wait_closed()

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.close()
