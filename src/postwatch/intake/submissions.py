"""Storing a submission: the submission, its attachments, one delivery job per recipient and a
``submission_stored`` event, all in one transaction. Nothing is acknowledged before it commits.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from postwatch.config import AccountConfig, Config, FormConfig
from postwatch.store.events import record_event
from postwatch.store.models import Attachment, DeliveryJob, Event, Submission, utcnow


def new_id() -> str:
    """A 32-hex-digit id that sorts by creation time (48-bit ms clock + 80 random bits)."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


def new_ids(n: int) -> list[str]:
    """``n`` ids as :func:`new_id` makes them, with one call for the random bits."""
    clock = f"{int(time.time() * 1000):012x}"
    rnd = os.urandom(10 * n).hex()
    return [clock + rnd[20 * i : 20 * i + 20] for i in range(n)]


def message_id(submission_id: str, recipient: str, sender: str) -> str:
    """A stable Message-ID per submission and recipient: a resend is recognisably the same mail."""
    domain = sender.rpartition("@")[2] or "postwatch.invalid"
    tag = hashlib.sha256(recipient.lower().encode()).hexdigest()[:12]
    return f"<{submission_id}.{tag}@{domain}>"


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
        status="spam" if new.spam else "stored",
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
    if not new.spam:
        for rcpt in new.form.recipients:
            sub.jobs.append(
                DeliveryJob(
                    account=new.account.id,
                    form=new.form.id,
                    recipient=rcpt,
                    role="primary",
                    state="pending",
                    next_attempt_at=now,
                    message_id=message_id(sid, rcpt, config.smtp.sender),
                    created_at=now,
                    updated_at=now,
                )
            )
    record_event(
        session,
        "spam_blocked" if new.spam else "submission_stored",
        account=new.account.id,
        form=new.form.id,
        at=now,
        data=_event_data(sid, new),
    )
    return Stored(sid, created=True)


def _event_data(sid: str, new: NewSubmission) -> dict[str, Any]:
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


def _idem_lookup(session: Session, items: list[NewSubmission]) -> dict[tuple[str, str, str], str]:
    """Existing submissions for the idempotency keys of ``items``: (account, form, key) -> id.

    One query per form in the batch, on the (account, form, idempotency_key) unique index.
    """
    wanted: dict[tuple[str, str], set[str]] = {}
    for n in items:
        if n.idempotency_key:
            wanted.setdefault((n.account.id, n.form.id), set()).add(n.idempotency_key)
    found: dict[tuple[str, str, str], str] = {}
    for (account, form), keys in wanted.items():
        rows = session.execute(
            select(Submission.idempotency_key, Submission.id).where(
                Submission.account == account,
                Submission.form == form,
                Submission.idempotency_key.in_(sorted(keys)),
            )
        ).all()
        for key, sid in rows:
            if key is not None:
                found[(account, form, key)] = sid
    return found


def add_batch(session: Session, config: Config, items: list[NewSubmission]) -> list[Stored]:
    """Add many submissions to ``session`` with a few multi-row INSERTs (the caller commits).

    Same rows as :func:`add_submission` for each item; an idempotency key seen before (in the
    store or earlier in the batch) yields the earlier id with ``created=False``.
    """
    known = _idem_lookup(session, items)
    ids = iter(new_ids(len(items)))
    results: list[Stored] = []
    subs: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    jobs: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for new in items:
        key = (new.account.id, new.form.id, new.idempotency_key) if new.idempotency_key else None
        if key is not None and key in known:
            results.append(Stored(known[key], created=False))
            continue
        sid = next(ids)
        if key is not None:
            known[key] = sid
        now = new.received_at or utcnow()
        subs.append(
            {
                "id": sid,
                "account": new.account.id,
                "form": new.form.id,
                "received_at": now,
                "fields": new.fields,
                "email": submitter_email(new.form, new.fields),
                "remote_addr": new.remote_addr,
                "user_agent": new.user_agent,
                "idempotency_key": new.idempotency_key,
                "status": "spam" if new.spam else "stored",
            }
        )
        for f in new.files:
            files.append(
                {
                    "submission_id": sid,
                    "field": f.field,
                    "filename": f.filename,
                    "content_type": f.content_type,
                    "size": len(f.data),
                    "data": f.data,
                }
            )
        if not new.spam:
            for rcpt in new.form.recipients:
                jobs.append(
                    {
                        "submission_id": sid,
                        "account": new.account.id,
                        "form": new.form.id,
                        "recipient": rcpt,
                        "role": "primary",
                        "state": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "message_id": message_id(sid, rcpt, config.smtp.sender),
                        "created_at": now,
                        "updated_at": now,
                    }
                )
        events.append(
            {
                "at": now,
                "kind": "spam_blocked" if new.spam else "submission_stored",
                "account": new.account.id,
                "form": new.form.id,
                "mailbox": None,
                "data": _event_data(sid, new),
            }
        )
        results.append(Stored(sid, created=True))
    # the same order in every transaction: two writers inserting the same idempotency keys
    # wait for each other instead of deadlocking
    subs.sort(key=lambda r: (r["idempotency_key"] is None, r["idempotency_key"] or ""))
    for model, rows in (
        (Submission, subs),
        (Attachment, files),
        (DeliveryJob, jobs),
        (Event, events),
    ):
        if rows:
            _insert_many(session, model.__table__, rows)  # type: ignore[arg-type]
    return results


_INSERTS: dict[tuple[str, str, tuple[str, ...]], tuple[str, tuple[str, ...] | None, list[Any]]] = {}


def _insert_many(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """A multi-row INSERT straight to the driver's ``executemany``.

    The statement is compiled once per table, dialect and column set; values go through each
    column type's own bind processor (UTC datetimes, JSON), exactly as a Core insert would do
    them, minus the per-call compile and cache-key work that dominated the writer's CPU.
    """
    conn = session.connection()
    dialect = conn.dialect
    cols = tuple(rows[0])
    key = (table.name, dialect.name, cols)
    entry = _INSERTS.get(key)
    if entry is None:
        compiled = insert(table).compile(dialect=dialect, column_keys=list(cols))
        order = tuple(compiled.positiontup) if compiled.positiontup else None
        names = order or cols
        procs = [table.c[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names]
        entry = (compiled.string, order, procs)
        _INSERTS[key] = entry
    sql, order, procs = entry
    params: list[Any]
    if order is not None:
        params = [
            tuple(p(r[n]) if p else r[n] for n, p in zip(order, procs, strict=True)) for r in rows
        ]
    else:
        params = [
            {n: (p(r[n]) if p else r[n]) for n, p in zip(cols, procs, strict=True)} for r in rows
        ]
    conn.exec_driver_sql(sql, params)


def store_batch(db: Any, config: Config, items: list[NewSubmission]) -> list[Stored]:
    """Store ``items`` in ONE transaction (one fsync); returns only after the commit."""
    with db.session() as s:
        return add_batch(s, config, items)
