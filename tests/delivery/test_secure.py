"""The secure path: STARTTLS or implicit TLS with AUTH, against aiosmtpd with a test certificate.

The password never appears in events, job rows or logs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from postwatch.config import Config
from postwatch.delivery.worker import DeliveryWorker
from postwatch.store import Database
from postwatch.store.events import fetch_events
from tests.conftest import make_config
from tests.delivery.conftest import drain, jobs, submit
from tests.smtpd import SmtpSink

INFO = "info@gym.example"
PASSWORD = "s3cret-Pa55w0rd!"


@pytest.fixture(params=["starttls", "tls"])
def secure_sink(request: pytest.FixtureRequest) -> Iterator[SmtpSink]:
    with SmtpSink(secure=request.param, auth=("postwatch", PASSWORD)) as sink:
        yield sink


def secure_config(tmp_path: Path, sink: SmtpSink, db: Database, **smtp: Any) -> Config:
    s: dict[str, Any] = {
        "host": "127.0.0.1", "port": sink.port, "sender": "postwatch@hoster.example",
        "security": sink.secure, "username": "postwatch", "password": PASSWORD,
        "ca_file": str(sink.ca_file), "timeout": "5s",
    }
    s.update(smtp)
    return make_config(tmp_path, smtp=s, database={"url": db.url},
                       delivery={"retry_base": "1s", "retry_max": "5s"})


def test_secure_delivery_with_auth(tmp_path: Path, db: Database, secure_sink: SmtpSink) -> None:
    cfg = secure_config(tmp_path, secure_sink, db)
    sid = submit(db, cfg)
    drain(DeliveryWorker(cfg, db))
    assert [m.rcpt_tos for m in secure_sink.messages] == [[INFO]]
    assert secure_sink.auth_seen == [("postwatch", True)]
    assert jobs(db, sid)[INFO].state == "delivered"


def test_wrong_password_is_temporary_and_never_shown(
    tmp_path: Path, db: Database, secure_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "WRONG-" + PASSWORD
    cfg = secure_config(tmp_path, secure_sink, db, password=wrong)
    caplog.set_level(logging.DEBUG)
    sid = submit(db, cfg)
    drain(DeliveryWorker(cfg, db))
    job = jobs(db, sid)[INFO]
    assert job.state == "pending"  # our relay's problem: retried, the lead is not failed
    assert "owner@private.example" not in jobs(db, sid)
    assert secure_sink.auth_seen and not any(ok for _, ok in secure_sink.auth_seen)
    with db.session(readonly=True) as s:
        dump = repr([(e.kind, e.data) for e in fetch_events(s)])
    for where in (dump, job.last_reply or "", caplog.text, repr(cfg), str(cfg.smtp)):
        assert wrong not in where and PASSWORD not in where


def test_untrusted_certificate_is_refused(
    tmp_path: Path, db: Database, secure_sink: SmtpSink
) -> None:
    cfg = secure_config(tmp_path, secure_sink, db, ca_file=None)
    sid = submit(db, cfg)
    drain(DeliveryWorker(cfg, db))
    job = jobs(db, sid)[INFO]
    assert job.state == "pending" and job.last_reason == "network"
    assert "certificate" in (job.last_reply or "").lower()
    assert secure_sink.messages == []


def test_plain_client_against_starttls_only_server(tmp_path: Path, db: Database) -> None:
    with SmtpSink(secure="starttls", auth=("postwatch", PASSWORD)) as sink:
        cfg = secure_config(tmp_path, sink, db, security="none", username=None, password=None)
        sid = submit(db, cfg)
        drain(DeliveryWorker(cfg, db))
        assert sink.messages == []
    job = jobs(db, sid)[INFO]
    assert job.state == "pending"  # 530 must issue STARTTLS: a config problem, retried
    assert (job.last_reply or "").startswith("530")
