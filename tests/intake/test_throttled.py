"""Issue 10 item 10: a throttled submission is kept (status ``throttled``), never just refused.

Behind a reverse proxy that sends no X-Forwarded-For every visitor has the proxy's address, so
the default rate limit capped the whole server at 20 sign-ups a minute and threw the rest away.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from typer.testing import CliRunner

from postwatch.app import create_app
from postwatch.cli import app as cli
from postwatch.config import Config
from postwatch.store import Database
from postwatch.store.models import DeliveryJob, Submission
from tests.intake.conftest import count, intake_config

JSON = {"Accept": "application/json"}


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def client_for(cfg: Config, db: Database, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(cfg, db), client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://postwatch.test")


def write_toml(cfg: Config, path: Path) -> Path:
    lines = ["[database]", f'url = "{cfg.database.url}"', "[smtp]",
             'sender = "postwatch@hoster.example"']
    for a in cfg.accounts:
        lines += ["[[accounts]]", f'id = "{a.id}"']
        for f in a.forms:
            lines += ["[[accounts.forms]]", f'id = "{f.id}"',
                      f"recipients = {json.dumps(f.recipients)}"]
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_over_the_rate_limit_is_kept_as_throttled_and_released(
    tmp_path: Path, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = intake_config(tmp_path, db, rate_limit=2)
    throttled_before = metric("postwatch_intake_submissions_total", result="throttled")
    caplog.set_level(logging.WARNING, logger="postwatch.intake")
    async with client_for(cfg, db) as c:  # a same-host proxy without X-Forwarded-For
        replies = [
            await c.post("/f/contact", data={"email": f"v{i}@example.org"}, headers=JSON)
            for i in range(5)
        ]
    assert [r.status_code for r in replies] == [201, 201, 429, 429, 429]
    for r in replies[2:]:
        body = r.json()
        assert body["status"] == "throttled" and body["id"]
        assert "kept" in body["error"] and "retry" in body["error"]
        assert int(r.headers["Retry-After"]) >= 1
    with db.session(readonly=True) as s:
        statuses = sorted(s.scalars(select(Submission.status)))
    assert statuses == ["stored", "stored", "throttled", "throttled", "throttled"]
    throttled_ids = [r.json()["id"] for r in replies[2:]]
    assert count(db, DeliveryJob, DeliveryJob.submission_id.in_(throttled_ids)) == 0  # not sent
    assert metric("postwatch_intake_submissions_total", result="throttled") == (
        throttled_before + 3
    )
    # every request came from a proxy address without X-Forwarded-For: said once, not per request
    warnings = [r.getMessage() for r in caplog.records if "X-Forwarded-For" in r.getMessage()]
    assert len(warnings) == 1 and "trusted_proxies" in warnings[0]
    assert metric("postwatch_intake_proxy_without_forwarded_for_total") >= 5

    config = write_toml(cfg, tmp_path / "postwatch.toml")
    listed = CliRunner().invoke(cli, ["submissions", "list", "--status", "throttled",
                                      "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("throttled") == 3
    assert "'" not in listed.output  # no Python repr quotes
    released = CliRunner().invoke(cli, ["submissions", "release", "--all",
                                        "--config", str(config)])
    assert released.exit_code == 0, released.output
    assert "released 3" in released.output
    assert count(db, Submission, Submission.status == "throttled") == 0
    assert count(db, DeliveryJob, DeliveryJob.submission_id.in_(throttled_ids)) == 6


async def test_a_retry_without_a_key_is_not_released_twice(tmp_path: Path, db: Database) -> None:
    """The 429 page asks the visitor to send again; a form without an idempotency key then
    gives two submissions of one lead. The release must not deliver the throttled copy."""
    cfg = intake_config(tmp_path, db, rate_limit=1)
    lead = {"email": "anna@example.org", "name": "Anna", "message": "Proefles"}
    async with client_for(cfg, db) as c:
        assert (await c.post("/f/contact", data={"x": "1"}, headers=JSON)).status_code == 201
        first = await c.post("/f/contact", data=lead, headers=JSON)
        other = await c.post("/f/contact", data=lead | {"name": "Bob"}, headers=JSON)
    assert first.status_code == 429 and other.status_code == 429
    async with client_for(cfg, db, peer="127.0.0.2") as c:  # anna sends it again, later
        again = await c.post("/f/contact", data=lead, headers=JSON)
    assert again.status_code == 201 and again.json()["id"] != first.json()["id"]
    config = write_toml(cfg, tmp_path / "postwatch.toml")
    released = CliRunner().invoke(cli, ["submissions", "release", "--all",
                                        "--config", str(config)])
    assert released.exit_code == 0, released.output
    assert "released 1" in released.output  # Bob's; Anna's lead is already on its way
    assert "sent it again" in released.output
    sid = first.json()["id"]
    assert count(db, DeliveryJob, DeliveryJob.submission_id == sid) == 0
    assert count(db, Submission, Submission.id == sid, Submission.status == "throttled") == 1


async def test_a_retry_with_the_same_key_releases_the_throttled_one(
    tmp_path: Path, db: Database
) -> None:
    cfg = intake_config(tmp_path, db, rate_limit=1)
    body = {"email": "anna@example.org", "_idempotency_key": "k-1"}
    async with client_for(cfg, db) as c:
        assert (await c.post("/f/contact", data={"x": "1"}, headers=JSON)).status_code == 201
        first = await c.post("/f/contact", data=body, headers=JSON)
    assert first.status_code == 429 and first.json()["status"] == "throttled"
    async with client_for(cfg, db, peer="127.0.0.2") as c:  # the visitor retries, later
        again = await c.post("/f/contact", data=body, headers=JSON)
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    sid = first.json()["id"]
    assert count(db, Submission, Submission.id == sid, Submission.status == "stored") == 1
    assert count(db, DeliveryJob, DeliveryJob.submission_id == sid) == 2


async def test_forwarded_for_from_a_trusted_proxy_limits_each_visitor(
    tmp_path: Path, db: Database
) -> None:
    """One rule: X-Forwarded-For counts only from [server] trusted_proxies (10.0.0.0/8 here)."""
    cfg = intake_config(tmp_path, db, rate_limit=1)
    async with client_for(cfg, db, peer="10.1.2.3") as c:
        for i in range(3):
            r = await c.post("/f/contact", data={"i": str(i)},
                             headers={**JSON, "X-Forwarded-For": f"198.51.100.{i}"})
            assert r.status_code == 201
    async with client_for(cfg, db, peer="127.0.0.1") as c:  # loopback is not trusted here
        codes = [
            (await c.post("/f/contact", data={"i": "x"},
                          headers={**JSON, "X-Forwarded-For": f"203.0.113.{i}"})).status_code
            for i in range(2)
        ]
    assert codes == [201, 429]
