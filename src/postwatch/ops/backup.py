"""A consistent copy of the SQLite store while postwatch runs (SQLite's online backup API).

Guarantees: the copy is one transaction-consistent snapshot of the store (every commit before the
snapshot, none after), read in one step: postwatch's store is in WAL mode, where a reader never
blocks the writers (intake, workers), and one step cannot be restarted by their commits;
it is written to ``DEST.partial``, checked (``PRAGMA integrity_check``), fsync'd and only then
renamed to ``DEST``, so ``DEST`` is either a whole good copy or absent. The copy is one file (its
write-ahead log is folded in). Failure modes: :class:`BackupError` naming the problem (the store
is PostgreSQL, the source is missing, ``DEST`` exists, the copy failed its check); a partial
file is removed.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url


class BackupError(Exception):
    """The backup was not made (the message says why)."""


@dataclass(frozen=True)
class BackupResult:
    source: Path
    dest: Path
    size: int
    seconds: float


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite store URL, ``None`` for any other database."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def pg_dump_hint(url: str, dest: Path) -> str:
    """The PostgreSQL way, with the URL's password left out (libpq reads ~/.pgpass/PGPASSWORD)."""
    u = make_url(url)
    bare = URL.create("postgresql", u.username, None, u.host, u.port, u.database, u.query)
    return f"pg_dump -Fc --dbname='{bare.render_as_string(hide_password=False)}' -f '{dest}'"


def backup_sqlite(source: Path, dest: Path, *, force: bool = False) -> BackupResult:
    if not source.is_file():
        raise BackupError(f"{source}: no such store")
    if dest.exists() and not force:
        raise BackupError(f"{dest} exists; use --force to replace it")
    if dest.resolve() == source.resolve():
        raise BackupError(f"{dest} is the store itself")
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
        try:
            out = sqlite3.connect(partial)
            try:
                src.backup(out)  # all pages in one step, one snapshot
                out.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                check = out.execute("PRAGMA integrity_check").fetchone()
                if check is None or check[0] != "ok":
                    raise BackupError(f"the copy failed its integrity check: {check}")
            finally:
                out.close()
        finally:
            src.close()
        with open(partial, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, dest)
        _fsync_dir(dest.parent)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"{source}: {exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return BackupResult(source, dest, dest.stat().st_size, time.monotonic() - started)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
