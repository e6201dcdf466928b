"""The background services ``postwatch serve`` runs for the delivery watch.

- :class:`MaillogService`: one per ``[[maillogs]]``: follows the file (``tail -F``), turns its
  lines into events, and stores the file position in the same transaction as the events.
- :class:`SyslogService`: the ``[syslog]`` listener; one parser per sending host.
- bounce mailboxes over IMAP IDLE: the bounces room's own service (:mod:`postwatch.bounces.imap`).

No log line is parsed on the event loop (issue 11): the event loop also serves form posts, and
one hostile line must never delay them.  The file follower reads and parses each chunk in a
worker thread (one chunk at a time per file: the file is the queue); the syslog listener only
frames and queues each raw message on the loop (at most :data:`MAX_PENDING` waiting: a TCP
sender then waits, flow control; a UDP message past that is counted in ``dropped`` and logged),
and a worker thread parses them (syslog header, then the mail-log line) in batches.  The parsers
themselves are linear in a line's length and never look into a line longer than
:data:`postwatch.maillogs.base.MAX_LINE`, so a thread holds the GIL only briefly.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo

from postwatch.config import Config, MaillogConfig, resolve_path
from postwatch.outbox import own_domain
from postwatch.rooms import ListenError, Service
from postwatch.services import Backoff
from postwatch.store import Database, StoreUnavailable
from postwatch.store.models_watch import FollowedFile
from postwatch.watch.detect import (
    LineProcessor,
    Observation,
    store_observations,
    watched_mailboxes,
)
from postwatch.watch.follow import Chunk, Follower, Position
from postwatch.watch.syslog import SyslogListener, parse_syslog

log = logging.getLogger("postwatch.watch")

#: how long a position-only change may wait before it is stored (lines without events)
POSITION_SAVE_EVERY = 1.0
#: syslog messages received but not parsed yet; past this, new messages are dropped (counted)
MAX_PENDING = 20_000
#: the parser thread yields the GIL (sleeps PARSE_PAUSE seconds) every PARSE_SLICE messages,
#: so that under a flood the event loop is not kept waiting a switch interval per step
PARSE_SLICE = 100
PARSE_PAUSE = 0.0


def local_tz() -> tzinfo:
    """The machine's zone (with its DST rules), for syslog timestamps without an offset."""
    try:
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        return datetime.now().astimezone().tzinfo or UTC


def _tz(name: str | None) -> tzinfo:
    return ZoneInfo(name) if name else local_tz()


def load_position(db: Database, key: str) -> Position | None:
    with db.session(readonly=True) as s:
        row = s.get(FollowedFile, key)
        if row is None:
            return None
        return Position(int(row.device), int(row.inode), int(row.offset))


def save_progress(
    db: Database,
    key: str,
    position: Position | None,
    observations: list[Observation],
    *,
    lines: int = 0,
    unparsed: int = 0,
    config: Config | None = None,
) -> list[str]:
    """Events and the new position in one transaction: a line is never stored twice."""
    with db.session() as s:
        kinds = store_observations(s, observations, config)
        if position is not None:
            row = s.get(FollowedFile, key)
            if row is None:
                row = FollowedFile(path=key)
                s.add(row)
            row.device, row.inode, row.offset = position.device, position.inode, position.offset
            row.lines, row.unparsed = lines, unparsed
            row.updated_at = datetime.now(UTC)
    return kinds


class MaillogService:
    """Follow one mail log file and turn it into events."""

    def __init__(
        self,
        config: Config,
        db: Database,
        maillog: MaillogConfig,
        *,
        poll_interval: float = 0.05,
        start: Literal["end", "beginning"] | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.path = resolve_path(config, maillog.path)
        self.key = str(self.path)
        self.name = f"watch:{self.path}"
        self.maillog = maillog
        self.poll_interval = poll_interval
        self.start = start or maillog.start
        self.processor: LineProcessor | None = None
        self.stored_events = 0

    def _processor(self) -> LineProcessor:
        return LineProcessor(
            watched_mailboxes(self.config),
            source=f"file:{self.path}",
            fmt=self.maillog.format,
            year=self.maillog.year,
            tz=_tz(self.maillog.timezone),
            own_domain=own_domain(self.config),
        )

    async def run(self, stop: asyncio.Event) -> None:
        position = await asyncio.to_thread(load_position, self.db, self.key)
        follower = Follower(self.path, position, start=self.start)
        processor = self.processor = self._processor()
        pending: Position | None = None
        last_save = time.monotonic()
        try:
            while not stop.is_set():
                # read and parse in a worker thread: the event loop keeps serving form posts
                chunk, observations = await asyncio.to_thread(_read_chunk, follower, processor)
                if chunk is None:
                    # idle (caught up): store a position held back, then wait
                    if pending is not None and time.monotonic() - last_save >= 0.2:
                        await self._save(pending, [])
                        pending = None
                        last_save = time.monotonic()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)
                    continue
                if "rotated" in chunk.events or "truncated" in chunk.events:
                    log.info("%s: %s", self.path, ", ".join(chunk.events))
                now = time.monotonic()
                if observations or chunk.events or now - last_save >= POSITION_SAVE_EVERY:
                    await self._save(chunk.position, observations)
                    pending = None
                    last_save = now
                else:
                    pending = chunk.position
                    await asyncio.sleep(0)  # let other services run between chunks
        finally:
            follower.close()
            if pending is not None:
                with contextlib.suppress(StoreUnavailable):
                    await self._save(pending, [])

    async def _save(self, position: Position, observations: list[Observation]) -> None:
        assert self.processor is not None
        backoff = Backoff()
        while True:
            try:
                kinds = await asyncio.to_thread(
                    save_progress,
                    self.db,
                    self.key,
                    position,
                    observations,
                    lines=self.processor.lines,
                    unparsed=self.processor.unparsed,
                    config=self.config,
                )
                self.stored_events += len(kinds)
                return
            except StoreUnavailable as exc:
                # hold the lines: nothing is acknowledged until stored (the file keeps them)
                delay = backoff.next()
                log.warning("%s: store unavailable (%s); retrying in %.1fs", self.name, exc, delay)
                await asyncio.sleep(delay)


def _read_chunk(
    follower: Follower, processor: LineProcessor
) -> tuple[Chunk | None, list[Observation]]:
    """One poll of the file and the observations of its lines (runs in a worker thread)."""
    chunk = follower.poll()
    if chunk is None:
        return None, []
    return chunk, processor.feed(chunk.lines)


class SyslogService:
    """The syslog listener: messages from other machines, through the same parsers."""

    name = "watch:syslog"

    def __init__(self, config: Config, db: Database) -> None:
        assert config.syslog is not None
        self.config = config
        self.db = db
        self.watched = watched_mailboxes(config)
        self.tz = local_tz()
        self.listener = SyslogListener(
            config.syslog.listen,
            None,
            protocols=list(config.syslog.protocols),
            tz=self.tz,
            on_frame=self._on_frame,
            backlog=self._backlogged,
        )
        self._processors: dict[str, LineProcessor] = {}
        self._queue: asyncio.Queue[list[Observation]] = asyncio.Queue()
        # (raw message, peer) received on the event loop, parsed by a worker thread
        self._pending: collections.deque[tuple[bytes, str]] = collections.deque()
        self._wake = asyncio.Event()
        self.stored_events = 0
        self.dropped = 0  # messages refused because MAX_PENDING were waiting
        self._dropped_logged = 0.0
        self._listening = False

    def _backlogged(self) -> bool:
        return len(self._pending) >= MAX_PENDING

    def _on_frame(self, data: bytes, peer: str) -> None:
        """On the event loop: queue the raw message for the parser thread (never parse here)."""
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            now = time.monotonic()
            if now - self._dropped_logged >= 10.0:
                self._dropped_logged = now
                log.warning(
                    "syslog: parser behind by %d messages; dropped %d so far",
                    len(self._pending),
                    self.dropped,
                )
            return
        self._pending.append((data, peer))
        self._wake.set()

    def _feed(self, batch: list[tuple[bytes, str]]) -> list[Observation]:
        """In a worker thread: parse the messages, then their lines per sending host."""
        lines: list[tuple[str, str]] = []
        tz = self.tz
        for i, (data, peer) in enumerate(batch):
            if i % PARSE_SLICE == PARSE_SLICE - 1:
                time.sleep(PARSE_PAUSE)  # hand the GIL to the event loop (form posts)
            try:
                msg = parse_syslog(data, tz=tz)
            except Exception:  # never let one message stop the listener
                msg = None
            if msg is None:
                self.listener.unparsed += 1
                continue
            lines.append((msg.hostname or peer, msg.to_line()))
        return self._feed_lines(lines)

    def _feed_lines(self, lines: list[tuple[str, str]]) -> list[Observation]:
        out: list[Observation] = []
        for i, (host, line) in enumerate(lines):
            if i % PARSE_SLICE == PARSE_SLICE - 1:
                time.sleep(PARSE_PAUSE)  # hand the GIL to the event loop (form posts)
            proc = self._processors.get(host)
            if proc is None:
                if len(self._processors) > 10_000:  # bounded: forget the oldest host
                    self._processors.pop(next(iter(self._processors)))
                proc = self._processors[host] = LineProcessor(
                    self.watched,
                    source=f"syslog:{host}",
                    fmt="postfix",
                    own_domain=own_domain(self.config),
                )
            out.extend(proc.feed([line]))
        return out

    async def _parser(self, stop: asyncio.Event) -> None:
        """Hand the queued messages to a worker thread, batch by batch, until stopped."""
        pending = self._pending
        while True:
            if not pending:
                if stop.is_set():
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=0.2)
                continue
            batch = [pending.popleft() for _ in range(min(len(pending), 2_000))]
            try:
                observations = await asyncio.to_thread(self._feed, batch)
            except Exception:  # a parser never raises; this is a bug, not a reason to stop
                log.exception("syslog: parsing a batch of %d messages failed", len(batch))
                continue
            if observations:
                self._queue.put_nowait(observations)

    async def _writer(self, stop: asyncio.Event) -> None:
        while not (stop.is_set() and self._queue.empty()):
            try:
                batch = await asyncio.wait_for(self._queue.get(), timeout=0.2)
            except TimeoutError:
                continue
            while not self._queue.empty():
                batch.extend(self._queue.get_nowait())
            backoff = Backoff()
            while True:
                try:
                    kinds = await asyncio.to_thread(self._store, batch)
                    self.stored_events += len(kinds)
                    break
                except StoreUnavailable as exc:
                    log.warning("syslog: store unavailable (%s); retrying", exc)
                    await asyncio.sleep(backoff.next())

    def _store(self, batch: list[Observation]) -> list[str]:
        with self.db.session() as s:
            return store_observations(s, batch, self.config)

    async def listen(self) -> None:
        """Bind the syslog sockets (before any service runs: rooms.Listener)."""
        try:
            await self.listener.start()
        except OSError as exc:
            await self.listener.close()
            assert self.config.syslog is not None
            raise ListenError(exc, self.config.syslog.listen, "syslog.listen") from None
        self._listening = True

    async def run(self, stop: asyncio.Event) -> None:
        if not self._listening:  # not bound by serve/worker before start, or a restart
            await self.listen()
        log.info(
            "syslog listening on %s (udp %s, tcp %s)",
            self.listener.host,
            self.listener.udp_port,
            self.listener.tcp_port,
        )
        parsed = asyncio.Event()  # set when the parser has handed over its last batch
        parser = asyncio.create_task(self._parser(stop))
        writer = asyncio.create_task(self._writer(parsed))
        try:
            await stop.wait()
        finally:
            self._listening = False
            await self.listener.close()
            if not stop.is_set():  # cancelled rather than stopped: do not wait for a drain
                parser.cancel()
            try:
                with contextlib.suppress(asyncio.CancelledError):
                    await parser
            finally:
                parsed.set()
                await writer


def build_services(config: Config, db: Database) -> list[Service]:
    """The watch's services for ``postwatch serve`` / ``postwatch worker``."""
    services: list[Any] = [MaillogService(config, db, m) for m in config.maillogs]
    if config.syslog is not None:
        services.append(SyslogService(config, db))
    return services


__all__ = ["MaillogService", "SyslogService", "build_services", "load_position"]
