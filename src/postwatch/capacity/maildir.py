"""Maildir quota source: Maildir++ ``maildirsize``, falling back to summing the Maildir.

``maildirsize`` (Maildir++ quota, written by Dovecot's ``maildir`` quota backend, Courier and
others): the first line holds the limits (``204800S,1000C``), every further line a change
``bytes count``; the sum of those lines is the usage. A file that is missing, unreadable,
malformed or over 5120 bytes (the spec says: recalculate) is not trusted: the Maildir is summed
instead, taking each message's size from ``,S=nnn`` in its file name, or from the file.

``path`` is the Maildir itself (it has ``cur/``) or a home folder holding ``Maildir/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from postwatch.capacity.sources import QuotaReading, QuotaTarget, failed

KIND = "maildir"
MAX_MAILDIRSIZE = 5120
_LIMITS_RE = re.compile(r"^\s*(?:(\d+)([SC]))?\s*(?:,\s*(\d+)([SC]))?\s*$")
_SIZE_RE = re.compile(r",S=(\d+)")


@dataclass
class MaildirSize:
    used_bytes: int
    messages: int
    limit_bytes: int | None
    message_limit: int | None


def parse_limits(line: str) -> tuple[int | None, int | None] | None:
    """The first line of ``maildirsize``: (byte limit, message limit); None if malformed."""
    m = _LIMITS_RE.match(line)
    if not m:
        return None
    limits: dict[str, int] = {}
    for num, unit in ((m.group(1), m.group(2)), (m.group(3), m.group(4))):
        if num is not None:
            limits[unit] = int(num)
    return limits.get("S") or None, limits.get("C") or None


def parse_maildirsize(text: str) -> MaildirSize | None:
    """Parse a ``maildirsize`` file; None when it must not be trusted (recalculate)."""
    if len(text.encode()) > MAX_MAILDIRSIZE or not text.strip():
        return None
    lines = text.split("\n")
    limits = parse_limits(lines[0])
    if limits is None:
        return None
    used = count = 0
    for line in lines[1:]:
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            return None
        try:
            used += int(parts[0])
            count += int(parts[1])
        except ValueError:
            return None
    if used < 0 or count < 0:
        return None
    return MaildirSize(used, count, limits[0], limits[1])


def maildir_root(path: Path) -> Path:
    if not (path / "cur").is_dir() and (path / "Maildir").is_dir():
        return path / "Maildir"
    return path


def sum_maildir(root: Path) -> tuple[int, int]:
    """(bytes, messages) of every message in ``cur``/``new`` of the Maildir and its folders."""
    folders = [root]
    with os.scandir(root) as it:
        for entry in it:
            if entry.name.startswith(".") and entry.name not in (".", "..") and entry.is_dir():
                folders.append(Path(entry.path))
    total = count = 0
    for folder in folders:
        for sub in ("cur", "new"):
            try:
                it = os.scandir(folder / sub)
            except FileNotFoundError:
                continue
            with it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    m = _SIZE_RE.search(entry.name)
                    if m:
                        size = int(m.group(1))
                    else:
                        try:
                            size = entry.stat(follow_symlinks=False).st_size
                        except FileNotFoundError:  # expunged meanwhile
                            continue
                    total += size
                    count += 1
    return total, count


class MaildirSource:
    kind = KIND

    def read(self, targets: Sequence[QuotaTarget]) -> list[QuotaReading]:
        return [self.read_one(t) for t in targets]

    def read_one(self, target: QuotaTarget) -> QuotaReading:
        assert target.cfg.path is not None
        root = maildir_root(Path(target.cfg.path))
        if not root.is_dir():
            return failed(target, KIND, f"{root}: no such Maildir")
        parsed: MaildirSize | None = None
        limits: tuple[int | None, int | None] | None = None
        try:
            text = (root / "maildirsize").read_text(errors="replace")
            parsed = parse_maildirsize(text)
            limits = parse_limits(text.split("\n", 1)[0])  # kept when the sums are not
        except FileNotFoundError:
            parsed = None
        except OSError as exc:
            return failed(target, KIND, f"{root / 'maildirsize'}: {exc.strerror}")
        if parsed is not None:
            return QuotaReading(
                target.account,
                target.mailbox,
                KIND,
                used_bytes=parsed.used_bytes,
                limit_bytes=parsed.limit_bytes,
                messages=parsed.messages,
                message_limit=parsed.message_limit,
            )
        try:
            used, count = sum_maildir(root)
        except OSError as exc:
            return failed(target, KIND, f"{root}: {exc.strerror or exc}")
        return QuotaReading(
            target.account,
            target.mailbox,
            KIND,
            used_bytes=used,
            messages=count,
            limit_bytes=limits[0] if limits else None,
            message_limit=limits[1] if limits else None,
        )
