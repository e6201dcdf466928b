"""Follow a log file like ``tail -F``, with a position that survives restarts.

:class:`Follower` reads complete lines from one configured path and hands them out in
:class:`Chunk` s, each with the :class:`Position` (device, inode, byte offset) just after its last
line. The caller stores that position in the same transaction as whatever the lines produced,
so after a restart nothing is read twice into the event log and nothing is skipped.

It copes with:

- rotation by rename (logrotate's default, ``postfix logrotate``): the old file is read to its
  end, then the new file at the path is read from its start;
- rotation while postwatch was down: the stored inode is looked up among the rotated siblings
  (``mail.log.1``, ``mail.log-20261129``...) and finished first;
- copytruncate: a file that became shorter than the position is read again from its start;
- a file that does not exist yet, or disappears for a while: it is read from its start when it
  (re)appears;
- a partial last line: kept back until its newline arrives (or the file is rotated away);
- a writer that still appends to the old file for a moment after the rename (until logrotate's
  postrotate tells it to reopen): the old file stays open and is read for ``rotate_grace``
  seconds after the switch.

A file found for the first time when following starts (no stored position) is read from its end
by default (``start="end"``), like ``tail -F``: the watch is about what happens from now on;
``postwatch investigate`` is for what happened before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

MAX_LINE = 64 * 1024  # a longer "line" is cut (a log line is never this long)
READ_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class Position:
    device: int
    inode: int
    offset: int


@dataclass(slots=True)
class Chunk:
    """Complete lines (without their newline) and the position just after the last one."""

    lines: list[str]
    position: Position
    path: Path  # the file actually read (a rotated sibling, when finishing one)
    events: list[str] = field(default_factory=list)  # "rotated", "truncated", "opened"...


class Follower:
    def __init__(
        self,
        path: Path | str,
        position: Position | None = None,
        *,
        start: Literal["end", "beginning"] = "end",
        read_size: int = READ_SIZE,
        rotate_grace: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self._stored = position
        self._start = start
        self._read_size = read_size
        self._fd: int | None = None
        self._ident: tuple[int, int] = (0, 0)
        self._reading: Path = self.path
        self._read_offset = 0  # bytes read from the file so far
        self._buf = b""  # a partial line read but not handed out
        self._notes: list[str] = []
        self.rotate_grace = rotate_grace
        # the rotated-away file, still read for a while: fd, partial line, deadline, path
        self._old: tuple[int, bytes, float, Path] | None = None
        self.rotations = 0
        self.truncations = 0
        if position is None and start == "end":
            # following starts now: what is already in the file is history
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(self.path)
                self._stored = Position(st.st_dev, st.st_ino, st.st_size)

    # ------------------------------------------------------------------------------- state
    @property
    def position(self) -> Position | None:
        """Where the next line starts (None before the file was ever opened)."""
        if self._fd is None:
            return self._stored
        return Position(self._ident[0], self._ident[1], self._read_offset - len(self._buf))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._old is not None:
            os.close(self._old[0])
            self._old = None

    # -------------------------------------------------------------------------------- poll
    def poll(self) -> Chunk | None:
        """Read what is there now; None when there is nothing new. Never blocks."""
        if self._old is not None:
            late = self._read_old()
            if late:
                return self._chunk(late, path=self._old[3] if self._old else None)
        if self._fd is None and not self._open():
            return None
        lines = self._read_lines()
        if lines:
            return self._chunk(lines)
        # at the end of the current file: has it been truncated, rotated or replaced?
        assert self._fd is not None
        fst = os.fstat(self._fd)
        if fst.st_size < self._read_offset:
            self.truncations += 1
            self._notes.append("truncated")
            self._buf = b""
            self._read_offset = 0
            os.lseek(self._fd, 0, os.SEEK_SET)
            lines = self._read_lines()
            return self._chunk(lines)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        if (st.st_dev, st.st_ino) == self._ident:
            return None
        # rotated away: go on with the new file; keep reading the old one for a grace period
        # (then hand out its last partial line), or hand that line out now without a grace
        old_fd, old_buf, old_path = self._fd, self._buf, self._reading
        self._fd = None
        if not self._open_new(0):  # the new file vanished again: stay with the old one
            self._fd, self._buf, self._reading = old_fd, old_buf, old_path
            return None
        tail = self._flush_old() if self._old is not None else []
        if self.rotate_grace > 0:
            self._old = (old_fd, old_buf, time.monotonic() + self.rotate_grace, old_path)
        else:
            if old_buf:
                tail.append(self._decode(old_buf))
            os.close(old_fd)
        self.rotations += 1
        self._notes.append("rotated")
        self._stored = None
        lines = tail + self._read_lines()
        return self._chunk(lines)

    def _chunk(self, lines: list[str], path: Path | None = None) -> Chunk | None:
        pos = self.position
        assert pos is not None
        notes, self._notes = self._notes, []
        if not lines and not notes:
            return None
        return Chunk(lines, pos, path or self._reading, notes)

    def _read_old(self) -> list[str]:
        """Late lines of the rotated-away file; closes it after the grace period."""
        assert self._old is not None
        fd, buf, deadline, path = self._old
        lines: list[str] = []
        data = os.read(fd, self._read_size)
        if data:
            buf += data
            cut = buf.rfind(b"\n")
            if cut >= 0:
                lines = buf[:cut].decode("utf-8", "replace").split("\n")
                lines = [ln.rstrip("\r") for ln in lines]
                buf = buf[cut + 1 :]
        self._old = (fd, buf, deadline, path)
        if time.monotonic() >= deadline:
            lines += self._flush_old()
        elif lines:
            self._notes.append("late")
        return lines

    def _flush_old(self) -> list[str]:
        assert self._old is not None
        fd, buf, _deadline, _path = self._old
        rest = os.read(fd, self._read_size)
        while rest:
            buf += rest
            rest = os.read(fd, self._read_size)
        os.close(fd)
        self._old = None
        if not buf:
            return []
        lines = buf.decode("utf-8", "replace").split("\n")
        if lines[-1] == "":
            lines.pop()
        return [ln.rstrip("\r") for ln in lines]

    # ---------------------------------------------------------------------------- opening
    def _open(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        ident = (st.st_dev, st.st_ino)
        stored = self._stored
        if stored is not None:
            if ident == (stored.device, stored.inode):
                offset = stored.offset if st.st_size >= stored.offset else 0
                if offset == 0 and stored.offset:
                    self.truncations += 1
                    self._notes.append("truncated")
                return self._open_new(offset)
            rotated = self._find_rotated(stored)
            if rotated is not None:
                # finish the file we were reading when postwatch stopped; poll() moves on
                return self._open_path(rotated, stored.offset)
            self._notes.append("rotated")
            return self._open_new(0)
        return self._open_new(0)

    def _open_new(self, offset: int, *, at_end: bool = False) -> bool:
        return self._open_path(self.path, offset, at_end=at_end)

    def _open_path(self, path: Path, offset: int, *, at_end: bool = False) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        if at_end:
            offset = st.st_size
        if offset > st.st_size:
            offset = 0
        os.lseek(fd, offset, os.SEEK_SET)
        self._fd = fd
        self._ident = (st.st_dev, st.st_ino)
        self._reading = path
        self._read_offset = offset
        self._buf = b""
        self._notes.append("opened")
        return True

    def _find_rotated(self, stored: Position) -> Path | None:
        """A sibling of the path (``name.1``, ``name-2026...``) that is the stored inode."""
        parent = self.path.parent
        try:
            entries = list(os.scandir(parent))
        except OSError:
            return None
        for entry in entries:
            if not entry.name.startswith(self.path.name) or entry.name == self.path.name:
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if (st.st_dev, st.st_ino) == (stored.device, stored.inode):
                    return Path(entry.path)
        return None

    # ---------------------------------------------------------------------------- reading
    def _read_lines(self) -> list[str]:
        assert self._fd is not None
        data = os.read(self._fd, self._read_size)
        if not data:
            return []
        self._read_offset += len(data)
        data = self._buf + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._buf = data
            if len(self._buf) > MAX_LINE:  # not a log line: hand it out cut
                self._buf = b""
                return [self._decode(data[:MAX_LINE])]
            return []
        self._buf = data[cut + 1 :]
        if len(self._buf) > MAX_LINE:
            self._buf = b""
        text = data[:cut].decode("utf-8", "replace")
        lines = text.split("\n")
        if "\r" in text:
            lines = [ln.rstrip("\r") for ln in lines]
        return lines

    @staticmethod
    def _decode(raw: bytes) -> str:
        return raw.decode("utf-8", "replace").rstrip("\r\n")


async def follow(
    follower: Follower, stop: asyncio.Event, *, interval: float = 0.05
) -> AsyncIterator[Chunk]:
    """Chunks as they come, polling every ``interval`` seconds when idle, until ``stop``."""
    while not stop.is_set():
        chunk = follower.poll()
        if chunk is not None:
            yield chunk
            await asyncio.sleep(0)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
