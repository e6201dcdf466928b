"""Input files: globs, plain or gzip, SHA-256 of the bytes on disk, line counts, progress.

Hostile inputs (issue 11): no line is ever held whole in memory past
:data:`~postwatch.maillogs.base.MAX_LINE` characters (a longer line is handed to the parser cut
to ``MAX_LINE + 1`` characters, which it counts as unparsed, and the rest of it is skipped), and
a gzip input may decompress to at most :func:`gzip_bound` bytes: past that, reading stops with
an :class:`InputError` naming the file (a gzip bomb), never a ``MemoryError``.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from postwatch.maillogs import MAX_LINE

#: characters decoded per read (the line splitter's chunk)
CHUNK = 1 << 20
#: a gzip input may decompress to GZIP_RATIO x its size on disk (at least GZIP_FLOOR bytes);
#: mail and access logs compress 5-30x, a gzip bomb about 1000x
GZIP_RATIO = 100
GZIP_FLOOR = 256 << 20
#: what head_lines reads at most (format detection must not read a bomb to its end)
HEAD_BUDGET = 8 << 20


class InputError(Exception):
    """A problem with an input file, for a person: names the file (and line)."""


@dataclass(slots=True)
class InputFile:
    """One input and what reading it found."""

    path: str
    kind: str  # "access" | "mail"
    size: int
    sha256: str = ""
    lines: int = 0
    unparsed: int = 0
    format: str = ""
    first: str | None = None  # ISO time of the first / last parsed line
    last: str | None = None


def expand(patterns: list[str], kind: str) -> list[InputFile]:
    """Expand globs; a pattern that matches nothing, or a missing file, is an error."""
    out: list[InputFile] = []
    seen: set[str] = set()
    for pattern in patterns:
        if glob.has_magic(pattern):
            paths = sorted(glob.glob(pattern))
            if not paths:
                raise InputError(f"{pattern}: no file matches this pattern")
        else:
            paths = [pattern]
        for p in paths:
            if p in seen:
                continue
            seen.add(p)
            if not os.path.exists(p):
                raise InputError(f"{p}: no such file")
            if os.path.isdir(p):
                raise InputError(f"{p}: is a directory, not a log file")
            if not os.access(p, os.R_OK):
                raise InputError(f"{p}: permission denied")
            out.append(InputFile(path=p, kind=kind, size=os.path.getsize(p)))
    return out


class _HashingReader(io.RawIOBase):
    """Reads a file while hashing every byte and counting bytes for progress."""

    def __init__(self, raw: io.BufferedReader, on_bytes: Callable[[int], None] | None) -> None:
        self._raw = raw
        self.hash = hashlib.sha256()
        self.done = 0
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._raw.readinto(buffer)
        if n:
            self.hash.update(memoryview(buffer)[:n])
            self.done += n
            if self._on_bytes is not None:
                self._on_bytes(n)
        return n or 0


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


READ_ERRORS = (OSError, EOFError, zlib.error)


def gzip_bound(size: int) -> int:
    """The most a gzip file of ``size`` bytes on disk may decompress to."""
    return max(GZIP_FLOOR, GZIP_RATIO * size)


def _bomb(item: InputFile, bound: int) -> InputError:
    return InputError(
        f"{item.path}: decompresses to more than {bound >> 20} MiB, over {GZIP_RATIO} times "
        f"its {item.size} bytes on disk: refused as a likely gzip bomb. If it is a genuine "
        f"log, decompress it yourself (zcat {item.path} > plain.log) and give the plain file."
    )


def split_lines(
    read: Callable[[int], str], *, on_chars: Callable[[int], None] | None = None
) -> Iterator[str]:
    """The lines of a text stream, without their newline, none longer than ``MAX_LINE + 1``.

    ``read(n)`` returns up to ``n`` characters ("" at the end).  A line longer than
    ``MAX_LINE`` is yielded cut to ``MAX_LINE + 1`` characters (so a parser counts it as
    unparsed) and the rest of it is skipped; memory stays within a chunk and a line.
    ``on_chars(n)`` is told how many characters each read returned."""
    carry = ""
    skipping = False  # inside an over-long line: drop everything up to its newline
    while True:
        chunk = read(CHUNK)
        if not chunk:
            break
        if on_chars is not None:
            on_chars(len(chunk))
        if skipping:
            nl = chunk.find("\n")
            if nl < 0:
                continue
            chunk = chunk[nl + 1 :]
            skipping = False
        lines = (carry + chunk).split("\n") if carry else chunk.split("\n")
        carry = lines.pop()
        if lines and max(map(len, lines)) > MAX_LINE:
            lines = [x if len(x) <= MAX_LINE else x[: MAX_LINE + 1] for x in lines]
        yield from lines
        if len(carry) > MAX_LINE:
            yield carry[: MAX_LINE + 1]
            carry = ""
            skipping = True
    if carry:
        yield carry


class LineSource:
    """The decoded lines of one input (invalid UTF-8 replaced), hashed as they are read.

    Iterate it (lines without their newline, cut by :func:`split_lines`; a gzip input raises
    :class:`InputError` once it has decompressed past :func:`gzip_bound`), then
    call :meth:`finish` with the number of lines read, which drains what is left, sets
    ``item.sha256`` and ``item.lines`` and closes the file.  A read error during iteration is
    turned into an :class:`InputError` naming the file and line by :meth:`error`.
    """

    def __init__(self, item: InputFile, on_bytes: Callable[[int], None] | None = None) -> None:
        self.item = item
        gz = _is_gzip(item.path)
        self._raw = open(item.path, "rb")  # noqa: SIM115 - closed in finish()/close()
        self._hashing = _HashingReader(self._raw, on_bytes)
        self._buffered = io.BufferedReader(self._hashing, buffer_size=1 << 20)
        stream: Any = self._buffered
        if gz:
            stream = gzip.GzipFile(fileobj=self._buffered, mode="rb")
        self.gzip = gz
        self.text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline=None)
        self.decoded = 0  # characters decoded so far

    def __iter__(self) -> Iterator[str]:
        if not self.gzip:
            return split_lines(self.text.read)
        bound = gzip_bound(self.item.size)

        def count(n: int) -> None:
            self.decoded += n
            if self.decoded > bound:
                self.close()
                raise _bomb(self.item, bound)

        return split_lines(self.text.read, on_chars=count)

    def finish(self, lines: int) -> None:
        try:
            while self._buffered.read(1 << 20):
                pass  # bytes the decoder did not need: the hash covers the whole file
        finally:
            self.close()
        self.item.lines = lines
        self.item.sha256 = self._hashing.hash.hexdigest()

    def error(self, exc: BaseException, lines: int) -> InputError:
        self.close()
        return InputError(f"{self.item.path}: line {lines + 1}: cannot read: {exc}")

    def close(self) -> None:
        self._raw.close()


def read_lines(item: InputFile, on_bytes: Callable[[int], None] | None = None) -> Iterator[str]:
    """Yield the lines of ``item`` through a :class:`LineSource` (convenience for small inputs)."""
    src = LineSource(item, on_bytes)
    n = 0
    try:
        for line in src:
            n += 1
            yield line
    except READ_ERRORS as exc:
        raise src.error(exc, n) from None
    src.finish(n)


def head_lines(path: str, count: int = 200) -> list[str]:
    """The first lines of a file (plain or gzip), for format detection and ordering."""
    try:
        if _is_gzip(path):
            fh: Any = gzip.open(path, "rt", encoding="utf-8", errors="replace")  # noqa: SIM115
        else:
            fh = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    out: list[str] = []
    budget = HEAD_BUDGET  # characters: format detection never reads a huge file to its end
    with fh:
        try:
            while len(out) < count and budget > 0:
                line = fh.readline(MAX_LINE + 1)
                if not line:
                    break
                budget -= len(line)
                if len(line) > MAX_LINE and not line.endswith("\n"):
                    # over-long: keep it cut (unparsable), skip its rest within the budget
                    while budget > 0:
                        rest = fh.readline(CHUNK)
                        budget -= len(rest)
                        if not rest or rest.endswith("\n"):
                            break
                out.append(line)
        except (OSError, EOFError, zlib.error):
            pass  # reading the whole file reports it, with the line number
    return out


def file_year(path: str) -> int:
    """The year of a file's modification time (for syslog lines without a year)."""
    from datetime import datetime

    return datetime.fromtimestamp(Path(path).stat().st_mtime).year
