"""Export, erasure and retention, through the real CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import update
from typer.testing import CliRunner

from postwatch.cli import app
from postwatch.config import Config
from postwatch.intake.records import (
    address_fragments,
    canonical_address,
    csv_safe,
    holds_address,
)
from postwatch.store import Database
from postwatch.store.models import Attachment, DeliveryJob, Submission, utcnow
from tests.intake.conftest import count, events

JSON = {"Accept": "application/json"}


@pytest.fixture
def config_file(cfg: Config, tmp_path: Path) -> Path:
    """The test config written as TOML, for the CLI."""
    path = tmp_path / "postwatch.toml"
    lines = [
        "[database]",
        f'url = "{cfg.database.url}"',
        "[smtp]",
        'sender = "postwatch@hoster.example"',
    ]
    for a in cfg.accounts:
        lines += ["[[accounts]]", f'id = "{a.id}"']
        for f in a.forms:
            lines += [
                "[[accounts.forms]]",
                f'id = "{f.id}"',
                f"recipients = {json.dumps(f.recipients)}",
                f"retention_days = {f.retention_days}",
            ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


async def _post(client: httpx.AsyncClient, form: str, **kw: object) -> str:
    r = await client.post(f"/f/{form}", headers=JSON, **kw)  # type: ignore[arg-type]
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def test_export_json_has_fields_and_deliveries(
    client: httpx.AsyncClient, db: Database, config_file: Path, tmp_path: Path
) -> None:
    a = await _post(client, "contact", data={"name": "Anna", "email": "anna@example.org"})
    b = await _post(client, "contact", data={"name": "Bob\r\nBcc: x@y.example", "i": ["1", "2"]})
    await _post(client, "bakery/shared", data={"name": "other tenant"})
    with db.session() as s:
        s.execute(
            update(DeliveryJob)
            .where(DeliveryJob.submission_id == a, DeliveryJob.recipient == "info@gym.example")
            .values(state="delivered", last_reply="250 2.0.0 Ok", attempts=1)
        )
    out = tmp_path / "out.json"
    run(
        "submissions",
        "export",
        "--form",
        "contact",
        "--format",
        "json",
        "--config",
        str(config_file),
        "--output",
        str(out),
    )
    rows = json.loads(out.read_text())
    assert [r["id"] for r in rows] == [a, b]  # never the other account's form
    first = rows[0]
    assert first["form"] == "contact" and first["status"] == "stored"
    assert first["fields"] == {"name": "Anna", "email": "anna@example.org"}
    assert first["received_at"]
    dels = {d["recipient"]: d for d in first["deliveries"]}
    assert dels["info@gym.example"]["state"] == "delivered"
    assert dels["info@gym.example"]["last_reply"] == "250 2.0.0 Ok"
    assert dels["info@gym.example"]["attempts"] == 1
    assert dels["info@gym.example"]["role"] == "primary"
    assert dels["sales@gym.example"]["state"] == "pending"
    assert rows[1]["fields"]["name"] == "Bob\r\nBcc: x@y.example"
    # to stdout too, and --since
    assert (
        json.loads(
            run(
                "submissions",
                "export",
                "--form",
                "gym/contact",
                "--config",
                str(config_file),
                "--since",
                "1h",
            )
        )
        == rows
    )
    assert (
        json.loads(
            run(
                "submissions",
                "export",
                "--form",
                "contact",
                "--config",
                str(config_file),
                "--since",
                "2999-01-01",
            )
        )
        == []
    )


async def test_export_csv_flattens_fields_and_defuses_formulas(
    client: httpx.AsyncClient, db: Database, config_file: Path
) -> None:
    await _post(client, "contact", data={"name": '=HYPERLINK("http://evil")', "a": "1"})
    await _post(client, "contact", data={"name": "Carla", "b": ["x", "+y"], "c": "@SUM(A1)"})
    text = run(
        "submissions",
        "export",
        "--form",
        "contact",
        "--format",
        "csv",
        "--config",
        str(config_file),
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2
    assert rows[0]["name"] == '\'=HYPERLINK("http://evil")'
    assert rows[0]["a"] == "1" and rows[0]["b"] == ""
    assert rows[1]["b"] == "x; +y"
    assert rows[1]["c"] == "'@SUM(A1)"
    assert "info@gym.example (primary): pending" in rows[1]["deliveries"]
    for bad in ("=1+1", "+1", "-1", "@x", "\t=1", "\r=1"):
        assert csv_safe(bad).startswith("'")
    assert csv_safe("plain") == "plain"


async def test_purge_email_removes_the_persons_data_and_records_counts_only(
    client: httpx.AsyncClient, db: Database, config_file: Path
) -> None:
    mine = [
        await _post(client, "contact", data={"email": "Zoe@Example.org", "msg": "1"}),
        await _post(
            client,
            "contact",
            files={"cv": ("cv.txt", b"my cv")},
            data={"email": "zoe@example.org"},
        ),
        # the address in another field (no email field on this form)
        await _post(client, "bakery/shared", data={"contact": " ZOE@example.org "}),
    ]
    other = await _post(client, "contact", data={"email": "zoe@example.org.evil", "x": "1"})
    out = run("submissions", "purge", "--email", "zoe@EXAMPLE.org", "--config", str(config_file))
    assert "purged 3 submissions" in out
    assert count(db, Submission, Submission.id.in_(mine)) == 0
    assert count(db, DeliveryJob, DeliveryJob.submission_id.in_(mine)) == 0
    assert count(db, Attachment) == 0
    assert count(db, Submission, Submission.id == other) == 1
    ev = events(db, "submissions_purged")
    by_form = {(e.account, e.data["form"]): e.data for e in ev}
    assert by_form[("gym", "contact")] == {
        "form": "contact",
        "count": 2,
        "attachments": 1,
        "jobs": 4,
        "why": "erasure",
    }
    assert by_form[("bakery", "shared")]["count"] == 1
    assert "zoe" not in json.dumps([e.data for e in ev]).lower()


async def test_retention_purge_by_cli_and_by_the_service(
    client: httpx.AsyncClient, db: Database, cfg: Config, config_file: Path
) -> None:
    old_gym = await _post(client, "contact", data={"n": "old"})
    new_gym = await _post(client, "contact", data={"n": "new"})
    old_bakery = await _post(client, "bakery/shared", data={"n": "40 days"})
    with db.session() as s:
        s.execute(
            update(Submission)
            .where(Submission.id == old_gym)
            .values(received_at=utcnow() - timedelta(days=366))
        )
        s.execute(
            update(Submission)
            .where(Submission.id == new_gym)
            .values(received_at=utcnow() - timedelta(days=364))
        )
        s.execute(
            update(Submission)
            .where(Submission.id == old_bakery)
            .values(received_at=utcnow() - timedelta(days=40))
        )  # bakery keeps 30 days
    out = run("submissions", "purge", "--expired", "--config", str(config_file))
    assert "purged 2 submissions" in out
    assert count(db, Submission) == 1
    assert count(db, Submission, Submission.id == new_gym) == 1
    assert {e.data["why"] for e in events(db, "submissions_purged")} == {"retention"}

    # the service of `postwatch serve` does the same at start
    import asyncio

    from postwatch.intake.service import build_services

    with db.session() as s:
        s.execute(update(Submission).values(received_at=utcnow() - timedelta(days=400)))
    stop = asyncio.Event()
    (svc,) = build_services(cfg, db)
    task = asyncio.create_task(svc.run(stop))
    for _ in range(100):
        if count(db, Submission) == 0:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    assert count(db, Submission) == 0


def test_cli_errors_are_messages(config_file: Path) -> None:
    r = CliRunner().invoke(
        app, ["submissions", "export", "--form", "nope", "--config", str(config_file)]
    )
    assert r.exit_code != 0 and "no form 'nope'" in r.output
    r = CliRunner().invoke(app, ["submissions", "purge", "--config", str(config_file)])
    assert r.exit_code != 0 and "exactly one of" in r.output
    r = CliRunner().invoke(
        app, ["submissions", "purge", "--email", "nobody", "--config", str(config_file)]
    )
    assert r.exit_code != 0 and "not an e-mail address" in r.output


async def test_list_shows_submissions(client: httpx.AsyncClient, config_file: Path) -> None:
    sid = await _post(client, "contact", data={"email": "l@example.org"})
    out = run("submissions", "list", "--config", str(config_file), "--form", "contact")
    assert sid in out and "l@example.org" in out and "info@gym.example:pending" in out


def test_check_config_reports_intake_problems(tmp_path: Path) -> None:
    from postwatch.intake.checks import check
    from tests.conftest import make_config

    cfg = make_config(
        tmp_path,
        server={"trusted_proxies": ["10.0.0.0/8", "not-an-ip"]},
        accounts=[
            {
                "id": "gym",
                "forms": [
                    {
                        "id": "contact",
                        "recipients": ["info@gym.example"],
                        "allowed_origins": ["https://gym.example", "https://[bad"],
                        "redirect": "javascript:alert(1)",
                        "honeypot_field": "email",
                    }
                ],
            }
        ],
    )
    problems = "\n".join(check(cfg))
    assert "trusted_proxies[1]" in problems
    assert "allowed_origins[1]" in problems
    assert "redirect" in problems
    assert "honeypot_field" in problems
    assert check(make_config(tmp_path)) == []


def test_export_refuses_a_short_form_id_two_accounts_use(config_file: Path) -> None:
    r = CliRunner().invoke(
        app, ["submissions", "export", "--form", "shared", "--config", str(config_file)]
    )
    assert r.exit_code != 0
    assert "several accounts" in r.output and "bakery/shared" in r.output
    out = run("submissions", "export", "--form", "bakery/shared", "--config", str(config_file))
    assert json.loads(out) == []


async def test_purge_finds_a_non_ascii_address_in_any_field_case_and_encoding(
    client: httpx.AsyncClient, db: Database, config_file: Path
) -> None:
    """Issue 11 item 6: SQLite stores JSON ``\\u``-escaped; the pre-filter looked for raw text
    and left submissions holding the address in fields other than ``email``."""
    mine = [
        await _post(client, "contact", data={"email": "jürgen@example.org"}),
        await _post(client, "bakery/shared", data={"contact": "JÜRGEN@EXAMPLE.ORG"}),
        await _post(client, "bakery/shared", json={"note": "Kontakt: Jürgen@Example.org, danke"}),
        await _post(client, "bakery/shared", json={"alt": "ju\u0308rgen@example.org"}),  # NFD
        await _post(client, "bakery/shared", json={"list": ["x", "mailto:jürgen@EXAMPLE.org"]}),
    ]
    others = [
        await _post(client, "bakery/shared", json={"c": "xjürgen@example.org"}),
        await _post(client, "bakery/shared", json={"c": "jürgen@example.org.evil"}),
        await _post(client, "bakery/shared", json={"c": "jürgen@example.organic"}),
        await _post(client, "bakery/shared", json={"c": "jurgen@example.org"}),
    ]
    out = run("submissions", "purge", "--email", "JÜRGEN@example.ORG", "--config", str(config_file))
    assert "purged 5 submissions" in out
    assert count(db, Submission, Submission.id.in_(mine)) == 0
    assert count(db, Submission, Submission.id.in_(others)) == len(others)
    # an internationalised domain, stored in its ASCII (punycode) form
    idn = await _post(client, "bakery/shared", json={"c": "Jürgen@XN--BCHER-KVA.example"})
    out = run("submissions", "purge", "--email", "jürgen@bücher.example", "--config",
              str(config_file))
    assert "purged 1 submissions" in out
    assert count(db, Submission, Submission.id == idn) == 0


@settings(max_examples=300, deadline=None)
@given(
    local=st.text(alphabet="abcdeßkKsüÜéØxyz0129._-", min_size=1, max_size=12),
    domain=st.sampled_from(["example.org", "bücher.example", "straße.de", "kö.example"]),
    form=st.sampled_from(["NFC", "NFD", "upper", "punycode"]),
)
def test_every_form_of_an_address_passes_the_store_filter(
    local: str, domain: str, form: str
) -> None:
    """The ASCII fragments the store filters by are in the stored text of every form of the
    address, \\u-escaped (SQLite) or not (PostgreSQL), and the decision finds it."""
    import unicodedata

    address = canonical_address(f"{local}@{domain}")
    stored = f"{local}@{domain}"
    if form == "upper":
        stored = stored.upper()
    elif form == "punycode":
        stored = f"{local}@" + domain.encode("idna").decode()
    else:
        stored = unicodedata.normalize(form, stored)
    for text in (json.dumps({"f": stored}), json.dumps({"f": stored}, ensure_ascii=False)):
        for fragment in address_fragments(address):
            assert fragment in text.lower()
    assert holds_address({"f": f"write to {stored}."}, address)
