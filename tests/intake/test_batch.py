"""Group commit with rows bound ahead of the writer: the same rows as one submission alone."""

from __future__ import annotations

import concurrent.futures
from typing import Any

from sqlalchemy import select

from postwatch.config import Config
from postwatch.intake.committer import GroupCommitter
from postwatch.intake.submissions import (
    NewSubmission,
    Stored,
    UploadedFile,
    store_submission,
)
from postwatch.store import Database
from postwatch.store.models import Attachment, DeliveryJob, Event, Submission
from tests.intake.conftest import jobs, submission


def _new(cfg: Config, i: int, **kw: Any) -> NewSubmission:
    account, form = cfg.form("gym/contact") or (None, None)
    assert account is not None and form is not None
    fields = {"name": f"Anna {i}", "email": "Anna@Example.org", "msg": ["a\r\nb", "ü €"]}
    return NewSubmission(
        account=account, form=form, fields=fields, remote_addr="127.0.0.1",
        user_agent="test", **kw,
    )


def _write(committer: GroupCommitter, items: list[NewSubmission]) -> list[Stored]:
    batch = []
    for new in items:
        committer._prepare(new)  # as submit() does in the request's task
        batch.append((new, (None, concurrent.futures.Future())))
    committer._write(batch)
    return [fut.result() for _n, (_l, fut) in batch]


def _shape(db: Database, sid: str) -> dict[str, Any]:
    sub = submission(db, sid)
    with db.session(readonly=True) as s:
        files = s.scalars(select(Attachment).where(Attachment.submission_id == sid)).all()
        evs = [e for e in s.scalars(select(Event)) if (e.data or {}).get("submission") == sid]
        shape = {
            "sub": (sub.account, sub.form, sub.fields, sub.email, sub.remote_addr, sub.user_agent,
                    sub.status, sub.received_at.tzinfo is not None),
            "files": [(f.field, f.filename, f.content_type, f.size, bytes(f.data)) for f in files],
            "jobs": sorted(
                (j.recipient, j.role, j.state, j.attempts, j.message_id.startswith(f"<{sid}."),
                 j.next_attempt_at == sub.received_at)
                for j in jobs(db, sid)
            ),
            "events": [(e.kind, e.account, e.form, e.mailbox,
                        {k: v for k, v in e.data.items() if k != "submission"}) for e in evs],
        }
    return shape


def test_batched_rows_equal_the_rows_of_one_alone(cfg: Config, db: Database) -> None:
    committer = GroupCommitter(cfg, db)
    files = [UploadedFile("cv", "cv.pdf", "application/pdf", b"%PDF\x00\xff")]
    alone = store_submission(db, cfg, _new(cfg, 1, files=files, idempotency_key="k-alone"))
    spam_alone = store_submission(db, cfg, _new(cfg, 2, spam=True, spam_reason="honeypot"))
    batched = _write(committer, [
        _new(cfg, 1, files=files, idempotency_key="k-batch"),
        _new(cfg, 2, spam=True, spam_reason="honeypot"),
    ])
    assert all(s.created for s in batched)
    assert _shape(db, batched[0].id) == _shape(db, alone.id)
    assert _shape(db, batched[1].id) == _shape(db, spam_alone.id)
    assert _shape(db, alone.id)["jobs"]  # the comparison compared something
    assert _shape(db, alone.id)["files"]


def test_idempotency_keys_in_the_store_and_within_one_batch(cfg: Config, db: Database) -> None:
    committer = GroupCommitter(cfg, db)
    first = _write(committer, [_new(cfg, 1, idempotency_key="dup")])[0]
    out = _write(committer, [
        _new(cfg, 2, idempotency_key="dup"),      # in the store already
        _new(cfg, 3, idempotency_key="twice"),    # twice in this batch
        _new(cfg, 4, idempotency_key="twice"),
        _new(cfg, 5),
    ])
    assert out[0] == Stored(first.id, created=False)
    assert out[1].created and out[2] == Stored(out[1].id, created=False)
    assert out[3].created
    with db.session(readonly=True) as s:
        assert len(s.scalars(select(Submission.id)).all()) == 3
        assert len(s.scalars(select(DeliveryJob.id)).all()) == 6
