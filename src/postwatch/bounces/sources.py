"""Where bounce messages come from: .eml files, mbox files, Maildirs (and IMAP, see imap.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from postwatch.bounces.parse import UnparsableMessage, parse_bytes

MAX_MESSAGE_BYTES = 50 * 1024 * 1024


class SourceError(Exception):
    """A path that cannot be read as messages; the message names the path and the problem."""


@dataclass(frozen=True, slots=True)
class Located:
    file: str
    index: int  # position in an mbox or Maildir (0 for a single message)
    message: Message  # only the top-level headers when ``problem`` is set
    problem: str | None = None  # why the message could not be parsed (it was refused)


def _located(file: str, index: int, raw: bytes) -> Located:
    try:
        return Located(file, index, parse_bytes(raw))
    except UnparsableMessage as exc:
        return Located(file, index, exc.headers, problem=str(exc))


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def _mbox_messages(path: Path) -> Iterator[bytes]:
    """Split an mbox on ``From `` lines (mboxrd/mboxo: ``>From `` unquoted one level)."""
    current: list[bytes] = []
    started = False
    with open(path, "rb") as fh:
        for line in fh:
            if line.startswith(b"From ") and (
                not started or not current or current[-1] in (b"\n", b"\r\n")
            ):
                if started and current:
                    yield b"".join(current)
                current = []
                started = True
                continue
            if line.startswith(b">") and line.lstrip(b">").startswith(b"From "):
                line = line[1:]
            current.append(line)
    if started and current:
        yield b"".join(current)


def read_messages(path: Path | str) -> Iterator[Located]:
    """Every message under ``path``: an .eml file, an mbox file, a Maildir or a folder of files."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if path.is_dir():
        if _is_maildir(path):
            files = sorted(
                p for sub in ("cur", "new") for p in (path / sub).iterdir() if p.is_file()
            )
            for i, p in enumerate(files):
                yield _located(str(p), i, _read(p))
            return
        for p in sorted(path.iterdir()):
            if (p.is_file() and not p.name.startswith(".")) or (p.is_dir() and _is_maildir(p)):
                yield from read_messages(p)
        return
    with open(path, "rb") as fh:
        head = fh.read(5)
    if head == b"From ":
        for i, raw in enumerate(_mbox_messages(path)):
            yield _located(str(path), i, raw)
        return
    yield _located(str(path), 0, _read(path))


def _read(path: Path) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > MAX_MESSAGE_BYTES:
            raise SourceError(f"{path}: {size} bytes is too big for one message")
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror}") from None
