"""Storing a submission: the submission, its attachments, one delivery job per recipient and a
``submission_stored`` event, all in one transaction. Nothing is acknowledged before it commits.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from postwatch.config import AccountConfig, Config, FormConfig
from postwatch.outbox import JOB_COLUMNS, enqueue, job_rows
from postwatch.store.events import EventKind, record_event
from postwatch.store.models import Attachment, DeliveryJob, Event, Submission, utcnow


def new_id() -> str:
    """A 32-hex-digit id that sorts by creation time (48-bit ms clock + 80 random bits)."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


def new_ids(n: int) -> list[str]:
    """``n`` ids as :func:`new_id` makes them, with one call for the random bits."""
    clock = f"{int(time.time() * 1000):012x}"
    rnd = os.urandom(10 * n).hex()
    return [clock + rnd[20 * i : 20 * i + 20] for i in range(n)]


@dataclass
class UploadedFile:
    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class NewSubmission:
    account: AccountConfig
    form: FormConfig
    fields: dict[str, Any]
    files: list[UploadedFile] = field(default_factory=list)
    remote_addr: str | None = None
    user_agent: str | None = None
    idempotency_key: str | None = None
    received_at: datetime | None = None
    spam: bool = False
    #: why it is spam (``honeypot``...), recorded in the ``spam_blocked`` event
    spam_reason: str | None = None
    #: over the rate limit: kept (status ``throttled``, no delivery) until released
    throttled: bool = False
    #: the rows bound for the driver ahead of the writer's turn (group commit), if done
    prepared: Prepared | None = field(default=None, repr=False, compare=False)


    @property
    def status(self) -> str:
        """The stored status: ``spam`` and ``throttled`` ones get no delivery jobs."""
        return "spam" if self.spam else "throttled" if self.throttled else "stored"

    @property
    def event_kind(self) -> EventKind:
        return {"spam": EventKind.SPAM_BLOCKED, "throttled": EventKind.SUBMISSION_THROTTLED}.get(
            self.status, EventKind.SUBMISSION_STORED
        )


@dataclass(frozen=True)
class Stored:
    id: str
    created: bool  # False: an earlier submission with the same idempotency key


def submitter_email(form: FormConfig, fields: dict[str, Any]) -> str | None:
    value = fields.get(form.email_field)
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, str) and "@" in value and len(value) <= 320:
        v = value.strip().lower()
        if "\r" not in v and "\n" not in v:
            return v
    return None


def add_submission(session: Session, config: Config, new: NewSubmission) -> Stored:
    """Add the submission and its outbox rows to ``session`` (the caller commits)."""
    if new.idempotency_key:
        prior = session.scalar(
            select(Submission.id).where(
                Submission.account == new.account.id,
                Submission.form == new.form.id,
                Submission.idempotency_key == new.idempotency_key,
            )
        )
        if prior is not None:
            return Stored(prior, created=False)
    sid = new_id()
    now = new.received_at or utcnow()
    sub = Submission(
        id=sid,
        account=new.account.id,
        form=new.form.id,
        received_at=now,
        fields=new.fields,
        email=submitter_email(new.form, new.fields),
        remote_addr=new.remote_addr,
        user_agent=new.user_agent,
        idempotency_key=new.idempotency_key,
        status=new.status,
    )
    session.add(sub)
    for f in new.files:
        sub.attachments.append(
            Attachment(
                field=f.field,
                filename=f.filename,
                content_type=f.content_type,
                size=len(f.data),
                data=f.data,
            )
        )
    if new.status == "stored":
        enqueue(session, job_rows(sid, new.account.id, new.form.id, new.form.recipients,
                                  sender=config.smtp.sender, now=now))
    record_event(
        session,
        new.event_kind,
        account=new.account.id,
        form=new.form.id,
        at=now,
        data=_event_data(sid, new),
    )
    return Stored(sid, created=True)


def _event_data(sid: str, new: NewSubmission) -> dict[str, Any]:
    if new.throttled:
        return {"submission": sid, "why": "rate_limit", "remote_addr": new.remote_addr}
    if new.spam:
        data: dict[str, Any] = {"submission": sid, "why": new.spam_reason or "spam"}
        if new.remote_addr:
            data["remote_addr"] = new.remote_addr
        return data
    return {"submission": sid, "recipients": list(new.form.recipients)}


def store_submission(db: Any, config: Config, new: NewSubmission) -> Stored:
    """Store one submission in its own transaction; returns only after the commit (fsync)."""
    try:
        with db.session() as s:
            return add_submission(s, config, new)
    except IntegrityError:
        if not new.idempotency_key:
            raise  # not a key race: a refused row must never look like an earlier success
        # a concurrent request with the same idempotency key won the race
        with db.session(readonly=True) as s:
            prior = s.scalar(
                select(Submission.id).where(
                    Submission.account == new.account.id,
                    Submission.form == new.form.id,
                    Submission.idempotency_key == new.idempotency_key,
                )
            )
        if prior is None:
            raise
        return Stored(prior, created=False)


# --------------------------------------------------------------------------- group commit


def _idem_lookup(conn: Any, items: list[NewSubmission]) -> dict[tuple[str, str, str], str]:
    """Existing submissions for the idempotency keys of ``items``: (account, form, key) -> id.

    One query per form in the batch, on the (account, form, idempotency_key) unique index,
    straight to the driver (the ORM's statement caching cost more than the query).
    """
    wanted: dict[tuple[str, str], set[str]] = {}
    for n in items:
        if n.idempotency_key:
            wanted.setdefault((n.account.id, n.form.id), set()).add(n.idempotency_key)
    found: dict[tuple[str, str, str], str] = {}
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    for (account, form), keys in wanted.items():
        sql = (
            "SELECT idempotency_key, id FROM submissions WHERE account = {m} AND form = {m} "
            "AND idempotency_key IN ({marks})"
        ).format(m=mark, marks=", ".join([mark] * len(keys)))
        rows = conn.exec_driver_sql(sql, (account, form, *sorted(keys))).all()
        for key, sid in rows:
            if key is not None:
                found[(account, form, key)] = sid
    return found


@dataclass
class Prepared:
    """The rows of one submission, bound for the driver (ids, JSON, UTC datetimes done): made
    by the request's own task before it queues for the writer, so the writer thread's turn
    (the SQLite write lock held, the next batch waiting) holds only the SQL and the fsync."""

    dialect: str
    id: str
    key: tuple[str, str, str] | None
    sub: Any
    sort: tuple[bool, str]
    files: list[Any]
    jobs: list[Any]
    event: Any


_SUB_COLS = ("id", "account", "form", "received_at", "fields", "email", "remote_addr",
             "user_agent", "idempotency_key", "status")
_FILE_COLS = ("submission_id", "field", "filename", "content_type", "size", "data")
_JOB_COLS = JOB_COLUMNS
_EVENT_COLS = ("at", "kind", "account", "form", "mailbox", "data")


def prepare(new: NewSubmission, config: Config, dialect: Any, sid: str | None = None) -> Prepared:
    """Bind the rows of ``new`` for ``dialect`` (see :class:`Prepared`)."""
    sid = sid or new_id()
    now = new.received_at or utcnow()
    key = (new.account.id, new.form.id, new.idempotency_key) if new.idempotency_key else None
    sub = _bind(Submission.__table__, dialect, _SUB_COLS, (  # type: ignore[arg-type]
        sid, new.account.id, new.form.id, now, new.fields, submitter_email(new.form, new.fields),
        new.remote_addr, new.user_agent, new.idempotency_key, new.status,
    ))
    files = [
        _bind(Attachment.__table__, dialect, _FILE_COLS,  # type: ignore[arg-type]
              (sid, f.field, f.filename, f.content_type, len(f.data), f.data))
        for f in new.files
    ]
    jobs = []
    if new.status == "stored":
        jobs = [
            _bind(DeliveryJob.__table__, dialect, _JOB_COLS, row)  # type: ignore[arg-type]
            for row in job_rows(sid, new.account.id, new.form.id, new.form.recipients,
                                sender=config.smtp.sender, now=now)
        ]
    event = _bind(Event.__table__, dialect, _EVENT_COLS, (  # type: ignore[arg-type]
        now, new.event_kind, new.account.id, new.form.id, None, _event_data(sid, new),
    ))
    sort = (new.idempotency_key is None, new.idempotency_key or "")
    return Prepared(dialect.name, sid, key, sub, sort, files, jobs, event)


def add_batch(session: Session, config: Config, items: list[NewSubmission]) -> list[Stored]:
    """Add many submissions to ``session`` with one multi-row INSERT per table (the caller
    commits).

    Same rows as :func:`add_submission` for each item; an idempotency key seen before (in the
    store or earlier in the batch) yields the earlier id with ``created=False``. Items come
    with their rows already bound (:func:`prepare`, done by the caller's task) or are bound here.
    """
    conn = session.connection()
    dialect = conn.dialect
    ready = [
        n.prepared if n.prepared is not None and n.prepared.dialect == dialect.name
        else prepare(n, config, dialect)
        for n in items
    ]
    known = _idem_lookup(conn, items)
    results: list[Stored] = []
    subs: list[tuple[tuple[bool, str], Any]] = []
    files: list[Any] = []
    jobs: list[Any] = []
    events: list[Any] = []
    for p in ready:
        if p.key is not None and p.key in known:
            results.append(Stored(known[p.key], created=False))
            continue
        if p.key is not None:
            known[p.key] = p.id
        subs.append((p.sort, p.sub))
        files.extend(p.files)
        jobs.extend(p.jobs)
        events.append(p.event)
        results.append(Stored(p.id, created=True))
    # the same order in every transaction: two writers inserting the same idempotency keys
    # wait for each other instead of deadlocking
    subs.sort(key=lambda r: r[0])
    for table, cols, rows in (
        (Submission.__table__, _SUB_COLS, [r for _s, r in subs]),
        (Attachment.__table__, _FILE_COLS, files),
        (DeliveryJob.__table__, _JOB_COLS, jobs),
        (Event.__table__, _EVENT_COLS, events),
    ):
        if rows:
            sql, _order, _procs = _compiled(table, dialect, cols)  # type: ignore[arg-type]
            conn.exec_driver_sql(sql, rows)
    return results


_INSERTS: dict[tuple[str, str, tuple[str, ...]], tuple[str, tuple[int, ...] | None, list[Any]]]
_INSERTS = {}


def _compiled(
    table: Table, dialect: Any, cols: tuple[str, ...]
) -> tuple[str, tuple[int, ...] | None, list[Any]]:
    """An INSERT of ``cols`` compiled once per table and dialect: (SQL, the positions of
    ``cols`` in the driver's positional order or None for named parameters, bind processors
    in ``cols`` order). The values go through each column type's own bind processor (UTC
    datetimes, JSON), exactly as a Core insert does them, minus the per-call compile work."""
    key = (table.name, dialect.name, cols)
    entry = _INSERTS.get(key)
    if entry is None:
        compiled = insert(table).compile(dialect=dialect, column_keys=list(cols))
        order = tuple(compiled.positiontup) if compiled.positiontup else None
        positions = tuple(cols.index(n) for n in order) if order else None
        procs = [table.c[n].type.dialect_impl(dialect).bind_processor(dialect) for n in cols]
        entry = (compiled.string, positions, procs)
        _INSERTS[key] = entry
    return entry


def _bind(table: Table, dialect: Any, cols: tuple[str, ...], values: tuple[Any, ...]) -> Any:
    """One row's parameters for the driver: a tuple (positional) or a dict (named)."""
    _sql, positions, procs = _compiled(table, dialect, cols)
    bound = [p(v) if p else v for v, p in zip(values, procs, strict=True)]
    if positions is not None:
        return tuple(bound[i] for i in positions)
    return dict(zip(cols, bound, strict=True))


def store_batch(db: Any, config: Config, items: list[NewSubmission]) -> list[Stored]:
    """Store ``items`` in ONE transaction (one fsync); returns only after the commit."""
    with db.session() as s:
        return add_batch(s, config, items)
