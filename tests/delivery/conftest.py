"""Fixtures of the delivery tests: a real aiosmtpd sink and a config that sends to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from postwatch.config import Config
from postwatch.delivery.worker import DeliveryWorker
from postwatch.intake.submissions import NewSubmission, UploadedFile, store_submission
from postwatch.store import Database
from postwatch.store.models import DeliveryJob, utcnow
from tests.conftest import make_config
from tests.smtpd import SmtpSink


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink(stall_seconds=3.0) as sink:
        yield sink


def delivery_config(tmp_path: Path, sink: SmtpSink | int, db: Database | None = None,
                    **delivery: Any) -> Config:
    """The gym config, sending to ``sink`` (or a port), with short delays (tests never wait
    for them)."""
    d: dict[str, Any] = {
        "workers": 2,
        "poll_interval": "0.2s",
        "lease": "30s",
        "retry_base": "1s",
        "retry_max": "10s",
        "give_up_after": "1h",
        "full_retry_every": "1s",
        "full_horizon": "7d",
    }
    d.update(delivery)
    smtp: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": sink if isinstance(sink, int) else sink.port,
        "sender": "postwatch@hoster.example",
        "timeout": "1s",
        # the test server answers for the mailbox itself (refuses "full" at RCPT): a final
        # server, so its 250 closes a mailbox-full episode
        "final": True,
    }
    overrides: dict[str, Any] = {"smtp": smtp, "delivery": d}
    if db is not None:
        overrides["database"] = {"url": db.url}
    return make_config(tmp_path, **overrides)


@pytest.fixture
def dconfig(tmp_path: Path, smtp_sink: SmtpSink, db: Database) -> Config:
    return delivery_config(tmp_path, smtp_sink, db)


def submit(db: Database, config: Config, fields: dict[str, Any] | None = None,
           files: list[UploadedFile] | None = None, form: str = "gym/contact") -> str:
    found = config.form(form)
    assert found is not None
    account, f = found
    new = NewSubmission(
        account=account, form=f,
        fields=fields if fields is not None else {
            "name": "Jan Jansen", "email": "jan@example.org", "message": "Hallo!"},
        files=files or [],
    )
    return store_submission(db, config, new).id


def make_due(db: Database) -> None:
    """Move every waiting job's next attempt to now: tests check behaviour, not timing."""
    with db.session() as s:
        s.execute(
            update(DeliveryJob)
            .where(DeliveryJob.state.in_(("pending", "held")))
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


def drain(worker: DeliveryWorker, limit: int = 100) -> int:
    """Run the worker until no job is due; returns how many jobs it handled."""
    n = 0
    while worker.step():
        n += 1
        assert n < limit, "worker does not run dry"
    return n


def jobs(db: Database, submission: str | None = None) -> dict[str, DeliveryJob]:
    with db.session(readonly=True) as s:
        q = select(DeliveryJob)
        if submission:
            q = q.where(DeliveryJob.submission_id == submission)
        return {j.recipient if submission else f"{j.submission_id}/{j.recipient}": j
                for j in s.scalars(q)}


Condition = Callable[[], bool]
