"""The store: one SQLAlchemy engine on SQLite (default, WAL, fsync on commit) or PostgreSQL.

``Database.session()`` is the unit of work: it commits when the block ends without an error and
rolls back otherwise. On SQLite every writing transaction starts with ``BEGIN IMMEDIATE`` so two
writers never deadlock on a lock upgrade; ``session(readonly=True)`` uses a deferred BEGIN.

On SQLite the writing sessions of one process also queue on a process-wide lock before their
``BEGIN IMMEDIATE``: a waiting thread is woken the moment the lock is free, instead of sleeping
in SQLite's busy handler (which backs off up to 100 ms per try, a long tail for form intake).
Other processes on the same file still meet SQLite's own lock and busy timeout.
"""

from __future__ import annotations

import importlib.resources
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

#: a writer waits this long for the process-wide SQLite write lock, then goes ahead and meets
#: SQLite's own busy timeout (never a deadlock, only the old behaviour)
WRITE_LOCK_WAIT = 30.0


class StoreUnavailable(Exception):
    """The database cannot be reached or written; callers must not acknowledge data."""


@dataclass(frozen=True)
class WriteFailure:
    """Writes are failing: since when, how often, and the last error (``/healthz`` says so)."""

    since: datetime
    count: int
    error: str


def normalise_url(url: str, base_dir: Path | None = None) -> str:
    """Make relative SQLite paths relative to ``base_dir`` (the config file's folder)."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        p = Path(u.database)
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        return str(u.set(database=str(p.resolve())))
    if u.get_backend_name() == "postgresql" and u.drivername == "postgresql":
        return str(u.set(drivername="postgresql+psycopg"))
    return url


class Database:
    def __init__(self, url: str, *, base_dir: Path | None = None, echo: bool = False) -> None:
        self.url = normalise_url(url, base_dir)
        u = make_url(self.url)
        self.dialect = u.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.dialect == "sqlite":
            if u.database and u.database != ":memory:":
                create_private(Path(u.database))
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            _sqlite_setup(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._ro_engine = self.engine.execution_options(postwatch_readonly=True)
        self._ro_sessions = sessionmaker(self._ro_engine, expire_on_commit=False)
        # re-entrant: a thread that nests write sessions meets SQLite's lock as before
        self._write_lock = threading.RLock() if self.dialect == "sqlite" else None
        #: set while write sessions fail (disk full, database down); cleared by the next commit
        #: that really changed rows (an empty commit proves nothing on a full disk)
        self.write_failure: WriteFailure | None = None
        self._wrote = threading.local()
        self._tracking = False  # the row-change listener runs only while writes fail
        self._track_lock = threading.Lock()

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        lock = None if readonly else self._write_lock
        if lock is not None and lock.acquire(timeout=WRITE_LOCK_WAIT):
            try:
                with self._session(readonly=readonly) as s:
                    yield s
            finally:
                lock.release()
            return
        with self._session(readonly=readonly) as s:
            yield s

    @contextmanager
    def _session(self, *, readonly: bool) -> Iterator[Session]:
        factory = self._ro_sessions if readonly else self._sessions
        self._wrote.rows = False
        try:
            with factory() as s:
                try:
                    yield s
                    if not readonly:
                        s.commit()
                        if self.write_failure is not None and self._wrote.rows:
                            self._writes_ok()
                except BaseException:
                    s.rollback()
                    raise
        except OperationalError as exc:
            error = str(exc.orig) if exc.orig else str(exc)
            if not readonly:
                self._write_failed(error)
            raise StoreUnavailable(error) from exc

    def _after_execute(self, _conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement[:6].upper() in ("INSERT", "UPDATE", "DELETE") and cursor.rowcount:
            self._wrote.rows = True

    def _writes_ok(self) -> None:
        with self._track_lock:
            self.write_failure = None
            if self._tracking:
                event.remove(self.engine, "after_cursor_execute", self._after_execute)
                self._tracking = False

    def _write_failed(self, error: str) -> None:
        with self._track_lock:
            if not self._tracking:  # costs per statement: only while writes fail
                event.listen(self.engine, "after_cursor_execute", self._after_execute)
                self._tracking = True
        old = self.write_failure
        self.write_failure = WriteFailure(
            since=old.since if old else datetime.now(UTC),
            count=(old.count if old else 0) + 1,
            error=error[:300],
        )

    def migrate(self) -> None:
        """Bring the schema to the newest version of every room (Alembic ``upgrade heads``)."""
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        loc = importlib.resources.files("postwatch.store") / "migrations"
        cfg.set_main_option("script_location", str(loc))
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # several processes starting at once on a fresh database: one migrates, the
                # others wait and then find nothing to do
                conn.execute(text("SELECT pg_advisory_xact_lock(7452019)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "heads")

    def ping(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except OperationalError as exc:
            raise StoreUnavailable(str(exc.orig)) from exc

    def dispose(self) -> None:
        self.engine.dispose()


def create_private(path: Path) -> None:
    """Create a SQLite file (and the folders above it) readable by its owner only: it holds
    personal data. SQLite gives its -wal and -shm files the database file's mode. An existing
    file keeps its mode (the operator may have chosen it)."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # SQLite reports the real problem when it opens the file
    os.close(fd)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # take transaction control away from pysqlite so BEGIN is ours
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit is fsync'd in WAL mode too; nothing acknowledged is lost on power cut
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("postwatch_readonly"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def database_from_config(cfg: Any) -> Database:
    """Build the Database of a loaded ``postwatch.config.Config``."""
    base = cfg.source_path.parent if cfg.source_path is not None else Path(os.getcwd())
    return Database(cfg.database.url, base_dir=base)
