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

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from postwatch.config import AccountConfig, Config, FormConfig
from postwatch.store.events import record_event
from postwatch.store.models import Attachment, DeliveryJob, Submission, utcnow


def new_id() -> str:
    """A 32-hex-digit id that sorts by creation time (48-bit ms clock + 80 random bits)."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


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
        data={"submission": sid, "recipients": [] if new.spam else list(new.form.recipients)},
    )
    return Stored(sid, created=True)


def store_submission(db: Any, config: Config, new: NewSubmission) -> Stored:
    """Store one submission in its own transaction; returns only after the commit (fsync)."""
    try:
        with db.session() as s:
            return add_submission(s, config, new)
    except IntegrityError:
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
