"""POST /f/{form}: every status code, every encoding, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from sqlalchemy import select, text

from postwatch.config import Config
from postwatch.store import Database
from postwatch.store.models import Attachment, DeliveryJob, Submission
from tests.intake.conftest import app_client, count, events, intake_config, jobs, submission

JSON = {"Accept": "application/json"}


# --------------------------------------------------------------------------- success


async def test_browser_form_post_redirects_303_after_storing(
    client: httpx.AsyncClient, db: Database
) -> None:
    r = await client.post(
        "/f/contact", data={"name": "Anna", "email": "Anna@Example.org", "msg": "hoi"}
    )
    assert r.status_code == 303
    assert r.headers["location"] == "https://gym.example/bedankt"
    assert count(db, Submission) == 1
    with db.session(readonly=True) as s:
        sub = s.scalars(select(Submission)).one()
    assert sub.fields == {"name": "Anna", "email": "Anna@Example.org", "msg": "hoi"}
    assert sub.email == "anna@example.org"
    assert sub.status == "stored"


async def test_json_client_gets_201_with_id_and_one_job_per_recipient(
    client: httpx.AsyncClient, db: Database
) -> None:
    r = await client.post("/f/contact", data={"name": "Bert"}, headers=JSON)
    assert r.status_code == 201
    body = r.json()
    assert body["status"] == "stored"
    sid = body["id"]
    assert submission(db, sid).fields == {"name": "Bert"}
    assert sorted(j.recipient for j in jobs(db, sid)) == ["info@gym.example", "sales@gym.example"]
    assert {j.state for j in jobs(db, sid)} == {"pending"}
    ev = events(db, "submission_stored")
    assert ev[-1].data["submission"] == sid
    assert ev[-1].account == "gym" and ev[-1].form == "contact"


async def test_json_body_is_accepted_and_answered_in_json(
    client: httpx.AsyncClient, db: Database
) -> None:
    payload = {"name": "Cees", "age": 41, "ok": True, "none": None, "tags": ["a", "b"]}
    r = await client.post("/f/contact", json=payload)
    assert r.status_code == 201
    fields = submission(db, r.json()["id"]).fields
    assert fields == {"name": "Cees", "age": "41", "ok": "true", "none": "", "tags": ["a", "b"]}


async def test_repeated_fields_become_lists(client: httpx.AsyncClient, db: Database) -> None:
    r = await client.post(
        "/f/contact",
        content=b"interest=yoga&interest=spinning&name=D&interest=boxing",
        headers={**JSON, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 201
    fields = submission(db, r.json()["id"]).fields
    assert fields == {"interest": ["yoga", "spinning", "boxing"], "name": "D"}


async def test_account_qualified_form_id_and_ambiguous_short_id(
    client: httpx.AsyncClient, db: Database
) -> None:
    r = await client.post("/f/bakery/shared", data={"x": "1"}, headers=JSON)
    assert r.status_code == 201
    sub = submission(db, r.json()["id"])
    assert (sub.account, sub.form) == ("bakery", "shared")
    r = await client.post("/f/shared", data={"x": "1"}, headers=JSON)
    assert r.status_code == 404
    assert "several accounts" in r.json()["error"]


async def test_form_without_redirect_answers_a_thank_you_page(
    client: httpx.AsyncClient, db: Database
) -> None:
    r = await client.post("/f/gym/shared", data={"x": "<b>"})
    assert r.status_code == 200
    assert "Thank you" in r.text


async def test_header_injection_attempts_are_stored_verbatim(
    client: httpx.AsyncClient, db: Database
) -> None:
    evil = {
        "name": "Eve\r\nBcc: victim@else.example",
        "email": "eve@x.example\r\nCc: more@else.example",
        "subject\r\nX-Injected": "yes\nTo: a@b.example",
    }
    r = await client.post("/f/contact", data=evil, headers=JSON)
    assert r.status_code == 201
    sub = submission(db, r.json()["id"])
    assert sub.fields == evil
    # an address with a line break in it is never taken as the submitter's address
    assert sub.email is None
    # recipients come from the config only
    assert sorted(j.recipient for j in jobs(db, sub.id)) == [
        "info@gym.example",
        "sales@gym.example",
    ]


async def test_unicode_round_trips(client: httpx.AsyncClient, db: Database) -> None:
    fields = {"naam": "Zoë Çelik ☃", "bericht": "Ünïcödé\u2028line"}
    r = await client.post("/f/contact", data=fields, headers=JSON)
    assert submission(db, r.json()["id"]).fields == fields


# --------------------------------------------------------------------------- attachments


async def test_multipart_with_attachments(client: httpx.AsyncClient, db: Database) -> None:
    body = (
        b"--BND\r\n"
        b'Content-Disposition: form-data; name="name"\r\n\r\nF\r\n'
        b"--BND\r\n"
        b'Content-Disposition: form-data; name="tags"\r\n\r\nx\r\n'
        b"--BND\r\n"
        b'Content-Disposition: form-data; name="tags"\r\n\r\ny\r\n'
        b"--BND\r\n"
        b'Content-Disposition: form-data; name="cv"; filename="C:\\fakepath\\my cv.pdf"\r\n'
        b"Content-Type: application/pdf\r\n\r\n%PDF-1.4 binary\x00\xff\r\n"
        b"--BND\r\n"  # a file input the visitor left empty, as browsers send it
        b'Content-Disposition: form-data; name="photo"; filename=""\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n\r\n"
        b"--BND--\r\n"
    )
    r = await client.post(
        "/f/contact",
        content=body,
        headers={**JSON, "Content-Type": "multipart/form-data; boundary=BND"},
    )
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert submission(db, sid).fields == {"name": "F", "tags": ["x", "y"]}
    with db.session(readonly=True) as s:
        atts = list(s.scalars(select(Attachment).where(Attachment.submission_id == sid)))
    assert [(a.field, a.filename, a.content_type, a.data) for a in atts] == [
        ("cv", "my cv.pdf", "application/pdf", b"%PDF-1.4 binary\x00\xff")
    ]


async def test_attachment_over_the_cap_is_413(tmp_path: Path, db: Database) -> None:
    cfg = intake_config(tmp_path, db, max_attachment_kb=2, max_body_kb=64)
    async with app_client(cfg, db) as c:
        ok = await c.post("/f/contact", files={"cv": ("a.txt", b"x" * 2048)}, headers=JSON)
        assert ok.status_code == 201
        r = await c.post("/f/contact", files={"cv": ("b.txt", b"x" * 2049)}, headers=JSON)
    assert r.status_code == 413
    assert "b.txt" in r.json()["error"] and "2 KB" in r.json()["error"]
    assert count(db, Submission) == 1


async def test_too_many_attachments_is_413(tmp_path: Path, db: Database) -> None:
    cfg = intake_config(tmp_path, db, max_attachments=1)
    async with app_client(cfg, db) as c:
        files = [("a", ("a.txt", b"1")), ("b", ("b.txt", b"2"))]
        r = await c.post("/f/contact", files=files, headers=JSON)
    assert r.status_code == 413
    assert "attachments" in r.json()["error"]


# --------------------------------------------------------------------------- refusals


async def test_unknown_form_is_404(client: httpx.AsyncClient, db: Database) -> None:
    r = await client.post("/f/nope", data={"a": "b"})
    assert r.status_code == 404
    assert "nope" in r.text
    r = await client.post("/f/bakery/contact", data={"a": "b"}, headers=JSON)
    assert r.status_code == 404
    assert count(db, Submission) == 0


async def test_wrong_content_type_is_415(client: httpx.AsyncClient, db: Database) -> None:
    r = await client.post(
        "/f/contact", content=b"name=x", headers={**JSON, "Content-Type": "text/plain"}
    )
    assert r.status_code == 415
    assert "text/plain" in r.json()["error"]
    r = await client.post("/f/contact", content=b"name=x", headers=JSON)
    assert r.status_code == 415
    assert "missing Content-Type" in r.json()["error"]
    assert count(db, Submission) == 0


async def test_malformed_bodies_are_400_with_a_reason(
    client: httpx.AsyncClient, db: Database
) -> None:
    cases = [
        ("application/json", b'{"name": ', "not valid JSON"),
        ("application/json", b'["a", "b"]', "must be an object"),
        ("application/json", b'{"a": {"b": 1}}', "nested objects"),
        ("application/x-www-form-urlencoded", b"name=%ff%fe", "not valid utf-8"),
        ("application/x-www-form-urlencoded", b"=nameless", "without a name"),
        ("multipart/form-data", b"--x\r\n", "boundary"),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data", None),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="a"\r\n\r\nv\r\n',
            "closing boundary",
        ),
    ]
    for ctype, body, words in cases:
        r = await client.post("/f/contact", content=body, headers={"Content-Type": ctype, **JSON})
        assert r.status_code == 400, (ctype, body, r.text)
        if words:
            assert words in r.json()["error"], (body, r.json())
    assert count(db, Submission) == 0


async def test_body_over_max_body_is_413_by_length_and_while_streaming(
    tmp_path: Path, db: Database
) -> None:
    cfg = intake_config(tmp_path, db, max_body_kb=1)
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        yield b"name="
        for _ in range(10_000):  # 10 MB if nobody stops us
            sent.append(1)
            yield b"x" * 1024

    async with app_client(cfg, db) as c:
        r = await c.post(
            "/f/contact",
            content=b"name=" + b"x" * 2000,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 413
        assert "1 KB" in r.text
        r = await c.post(
            "/f/contact",
            content=endless(),
            headers={**JSON, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 413
        r = await c.post(
            "/f/contact", content=endless(), headers={**JSON, "Content-Type": "application/json"}
        )
        assert r.status_code == 413
    assert len(sent) < 100  # refused on the way, not after reading everything
    assert count(db, Submission) == 0


async def test_field_name_and_value_caps(tmp_path: Path, db: Database) -> None:
    cfg = intake_config(
        tmp_path, db, max_field_name_chars=10, max_field_value_chars=5, max_fields=3
    )
    async with app_client(cfg, db) as c:
        r = await c.post("/f/contact", data={"a" * 11: "v"}, headers=JSON)
        assert r.status_code == 400 and "longer than 10 characters" in r.json()["error"]
        r = await c.post("/f/contact", data={"name": "123456"}, headers=JSON)
        assert r.status_code == 413 and "'name'" in r.json()["error"]
        r = await c.post("/f/contact", files={"f": (None, b"123456")}, headers=JSON)
        assert r.status_code == 413 and "'f'" in r.json()["error"]
        r = await c.post("/f/contact", data={"a": "1", "b": "2", "c": "3", "d": "4"}, headers=JSON)
        assert r.status_code == 413 and "more than 3 fields" in r.json()["error"]
        r = await c.post("/f/contact", data={"name": "12345"}, headers=JSON)
        assert r.status_code == 201
    assert count(db, Submission) == 1


def _refuse_inserts(db: Database, when: str) -> None:
    """A trigger that makes the store refuse some (or all) submissions."""
    with db.engine.begin() as conn:
        if db.is_sqlite:
            cond = "1" if when == "all" else f"NEW.fields LIKE '%{when}%'"
            conn.execute(
                text(
                    "CREATE TRIGGER pw_refuse BEFORE INSERT ON submissions "
                    f"WHEN {cond} BEGIN SELECT RAISE(ABORT, 'store refuses'); END"
                )
            )
        else:
            cond = "true" if when == "all" else f"NEW.fields::text LIKE '%{when}%'"
            conn.execute(
                text(
                    "CREATE FUNCTION pw_refuse() RETURNS trigger AS $$ BEGIN "
                    f"IF {cond} THEN RAISE EXCEPTION 'store refuses'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER pw_refuse BEFORE INSERT ON submissions "
                    "FOR EACH ROW EXECUTE FUNCTION pw_refuse()"
                )
            )


async def test_store_refusing_writes_gives_503_never_success(
    client: httpx.AsyncClient, db: Database
) -> None:
    _refuse_inserts(db, "all")
    r = await client.post("/f/contact", data={"name": "G"}, headers=JSON)
    assert r.status_code == 503
    assert "nothing was stored" in r.json()["error"]
    r = await client.post("/f/contact", data={"name": "G"})
    assert r.status_code == 503
    assert count(db, Submission) == 0
    assert count(db, DeliveryJob) == 0


async def test_sqlite_store_unreachable_gives_503(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "gone"
    db = Database(f"sqlite:///{folder / 'postwatch.db'}")
    db.migrate()
    cfg = intake_config(tmp_path, db)
    db.dispose()
    shutil.rmtree(folder)
    async with app_client(cfg, db) as c:
        r = await c.post("/f/contact", data={"name": "H"}, headers=JSON)
        r2 = await c.post("/f/contact", data={"name": "H"})
    assert r.status_code == 503 and r2.status_code == 503
    assert "store unavailable" in r.json()["error"]


async def test_sqlite_store_read_only_gives_503(tmp_path: Path) -> None:
    from sqlalchemy import event

    db = Database(f"sqlite:///{tmp_path / 'ro.db'}")
    db.migrate()
    db.dispose()

    @event.listens_for(db.engine, "connect")
    def _read_only(dbapi_conn, _rec):  # type: ignore[no-untyped-def]
        dbapi_conn.execute("PRAGMA query_only=ON")

    cfg = intake_config(tmp_path, db)
    async with app_client(cfg, db) as c:
        r = await c.post("/f/contact", data={"name": "I"}, headers=JSON)
    assert r.status_code == 503
    db.dispose()


async def test_postgresql_unreachable_gives_503(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = Database(f"postgresql+psycopg://postgres@127.0.0.1:{port}/nothing")
    cfg = intake_config(tmp_path, db)
    async with app_client(cfg, db) as c:
        r = await c.post("/f/contact", data={"name": "J"}, headers=JSON)
    assert r.status_code == 503
    assert "store unavailable" in r.json()["error"]


def test_a_failed_batch_fails_only_its_bad_row(cfg: Config, db: Database) -> None:
    import concurrent.futures

    from postwatch.intake.committer import GroupCommitter
    from postwatch.intake.submissions import NewSubmission

    _refuse_inserts(db, "POISON")
    account, form = cfg.form("gym/contact") or (None, None)
    assert account is not None and form is not None
    committer = GroupCommitter(cfg, db)
    batch = []
    for i in range(8):
        value = "POISON" if i == 3 else f"ok{i}"
        new = NewSubmission(account=account, form=form, fields={"v": value})
        batch.append((new, (None, concurrent.futures.Future())))
    committer._write(batch)  # one batch of 8, as the writer thread would take it
    outcomes = [f.exception() is None for _n, (_loop, f) in batch]
    assert outcomes == [True, True, True, False, True, True, True, True]
    assert count(db, Submission) == 7
    assert count(db, DeliveryJob) == 14
    for new, (_loop, fut) in batch:
        if fut.exception() is None:
            assert submission(db, fut.result().id).fields == new.fields


# --------------------------------------------------------------------------- spam defences


async def test_honeypot_answers_like_success_but_stores_spam_undelivered(
    client: httpx.AsyncClient, db: Database
) -> None:
    # form's own honeypot field
    r = await client.post(
        "/f/signup",
        data={"name": "bot", "website": "http://spam.example"},
        headers={**JSON, "Origin": "https://gym.example"},
    )
    assert r.status_code == 201
    sub = submission(db, r.json()["id"])
    assert sub.status == "spam"
    assert "website" not in sub.fields
    assert jobs(db, sub.id) == []
    ev = events(db, "spam_blocked")
    assert ev[-1].data["why"] == "honeypot" and ev[-1].data["submission"] == sub.id
    # the intake-wide default honeypot on a form that has none; browsers get the redirect
    r = await client.post("/f/contact", data={"name": "bot", "_gotcha": "x"})
    assert r.status_code == 303
    assert count(db, Submission, Submission.status == "spam") == 2
    assert events(db, "submission_stored") == []
    # an empty honeypot is a person
    r = await client.post("/f/contact", data={"name": "person", "_gotcha": ""}, headers=JSON)
    assert submission(db, r.json()["id"]).status == "stored"


async def test_rate_limit_per_ip_gives_429_with_retry_after(tmp_path: Path, db: Database) -> None:
    cfg = intake_config(tmp_path, db, rate_limit=3)
    async with app_client(cfg, db) as c:
        codes = [(await c.post("/f/contact", data={"n": str(i)}, headers=JSON)) for i in range(5)]
        assert [r.status_code for r in codes] == [201, 201, 201, 429, 429]
        assert int(codes[3].headers["retry-after"]) >= 1
        assert "too many" in codes[3].json()["error"]
    # another address has its own bucket
    async with app_client(cfg, db, peer="192.0.2.7") as c:
        assert (await c.post("/f/contact", data={"n": "x"}, headers=JSON)).status_code == 201
    # the two over the limit are kept as throttled, not delivered (issue 10 item 10)
    assert count(db, Submission) == 6
    assert count(db, Submission, Submission.status == "throttled") == 2


async def test_forwarded_for_is_honoured_only_from_trusted_proxies(
    tmp_path: Path, db: Database
) -> None:
    cfg = intake_config(tmp_path, db, rate_limit=1)
    # behind a trusted proxy (10.0.0.0/8): each client has its own bucket
    async with app_client(cfg, db, peer="10.1.2.3") as c:
        for client_addr in ("198.51.100.1", "198.51.100.2"):
            r = await c.post(
                "/f/contact",
                data={"n": "1"},
                headers={**JSON, "X-Forwarded-For": f"6.6.6.6, {client_addr}"},
            )
            assert r.status_code == 201
            assert submission(db, r.json()["id"]).remote_addr == client_addr
    # an untrusted peer cannot escape its bucket with a forged header
    async with app_client(cfg, db, peer="203.0.113.9") as c:
        r1 = await c.post(
            "/f/contact", data={"n": "1"}, headers={**JSON, "X-Forwarded-For": "1.1.1.1"}
        )
        r2 = await c.post(
            "/f/contact", data={"n": "1"}, headers={**JSON, "X-Forwarded-For": "2.2.2.2"}
        )
    assert r1.status_code == 201 and r2.status_code == 429
    assert submission(db, r1.json()["id"]).remote_addr == "203.0.113.9"


async def test_allowed_origins_403_otherwise_and_cors_for_fetch(
    client: httpx.AsyncClient, db: Database
) -> None:
    ok = await client.post(
        "/f/signup", data={"n": "1"}, headers={**JSON, "Origin": "https://gym.example"}
    )
    assert ok.status_code == 201
    assert ok.headers["access-control-allow-origin"] == "https://gym.example"
    # a bare host in the config allows http and https; Referer counts when Origin is absent
    by_ref = await client.post(
        "/f/signup", data={"n": "1"}, headers={**JSON, "Referer": "http://www.gym.example/x?y"}
    )
    assert by_ref.status_code == 201
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "https://gym.example.evil.example"},
        {"Referer": "https://evil.example/gym.example"},
        {},
    ):
        r = await client.post("/f/signup", data={"n": "1"}, headers={**JSON, **headers})
        assert r.status_code == 403, headers
        assert "accepts submissions only from" in r.json()["error"]
        assert "access-control-allow-origin" not in r.headers
    assert count(db, Submission) == 2
    # preflight for fetch() with JSON
    pre = await client.options(
        "/f/signup",
        headers={
            "Origin": "https://gym.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, idempotency-key",
        },
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "https://gym.example"
    assert "Idempotency-Key" in pre.headers["access-control-allow-headers"]
    bad = await client.options("/f/signup", headers={"Origin": "https://evil.example"})
    assert bad.status_code == 403
    assert "access-control-allow-origin" not in bad.headers


# --------------------------------------------------------------------------- idempotency


async def test_idempotency_key_header_and_hidden_field(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = {**JSON, "Idempotency-Key": "click-1"}
    a = await client.post("/f/contact", data={"n": "1"}, headers=h)
    b = await client.post("/f/contact", data={"n": "1"}, headers=h)
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] == b.json()["id"]
    assert b.headers["idempotent-replayed"] == "true"
    c = await client.post("/f/contact", data={"n": "2", "_idempotency_key": "click-2"})
    d = await client.post("/f/contact", data={"n": "2", "_idempotency_key": "click-2"})
    assert c.status_code == d.status_code == 303
    assert count(db, Submission) == 2
    assert count(db, DeliveryJob) == 4
    with db.session(readonly=True) as s:
        assert "_idempotency_key" not in json.dumps(
            [x.fields for x in s.scalars(select(Submission))]
        )
    # the same key on another form is another submission
    e = await client.post("/f/gym/shared", data={"n": "1"}, headers=h)
    assert e.json()["id"] != a.json()["id"]
    too_long = await client.post(
        "/f/contact", data={"n": "1"}, headers={**JSON, "Idempotency-Key": "k" * 201}
    )
    assert too_long.status_code == 400


async def test_concurrent_double_submits_are_one_submission(cfg: Config, db: Database) -> None:
    # two apps = two writers (as two processes would have), 40 concurrent clicks per key
    async with app_client(cfg, db) as c1, app_client(cfg, db) as c2:
        reqs = []
        for key in ("k-a", "k-b", "k-c"):
            for i in range(40):
                c = c1 if i % 2 else c2
                reqs.append(
                    c.post("/f/contact", data={"k": key}, headers={**JSON, "Idempotency-Key": key})
                )
        replies = await asyncio.gather(*reqs)
    assert {r.status_code for r in replies} == {201}
    ids = {}
    for r in replies:
        key = r.request.headers["idempotency-key"]
        ids.setdefault(key, set()).add(r.json()["id"])
    assert all(len(v) == 1 for v in ids.values()), ids
    assert count(db, Submission) == 3
    assert count(db, DeliveryJob) == 6
    assert len(events(db, "submission_stored")) == 3


# --------------------------------------------------------------------------- metrics, group commit


async def test_concurrent_submissions_share_commits_and_metrics_count_them(
    client: httpx.AsyncClient, db: Database
) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, labels or {}) or 0.0

    stored0 = sample("postwatch_intake_submissions_total", {"result": "stored"})
    rejected0 = sample("postwatch_intake_rejected_total", {"reason": "unknown_form"})
    lat0 = sample("postwatch_intake_latency_seconds_count")
    replies = await asyncio.gather(
        *[client.post("/f/contact", data={"i": str(i)}, headers=JSON) for i in range(60)]
    )
    assert {r.status_code for r in replies} == {201}
    assert len({r.json()["id"] for r in replies}) == 60
    assert count(db, Submission) == 60 and count(db, DeliveryJob) == 120
    await client.post("/f/nope", data={})
    assert sample("postwatch_intake_submissions_total", {"result": "stored"}) - stored0 == 60
    assert sample("postwatch_intake_rejected_total", {"reason": "unknown_form"}) - rejected0 == 1
    assert sample("postwatch_intake_latency_seconds_count") - lat0 == 61
    assert sample("postwatch_intake_batch_size_count") > 0
    m = await client.get("/metrics")
    assert "postwatch_intake_batch_size_bucket" in m.text


async def test_large_attachment_within_the_default_limits(
    client: httpx.AsyncClient, db: Database
) -> None:
    data = bytes(range(256)) * (3 * 4096)  # 3 MiB, under the default 5 MiB per attachment
    r = await client.post("/f/contact", files={"cv": ("cv.bin", data)}, headers=JSON)
    assert r.status_code == 201, r.text
    with db.session(readonly=True) as s:
        att = s.scalars(select(Attachment)).one()
    assert att.size == len(data) and att.data == data


async def test_text_no_store_can_keep_is_400_on_both_stores(
    client: httpx.AsyncClient, db: Database
) -> None:
    """NUL and lone surrogates: PostgreSQL cannot store them, so both stores refuse them alike
    (a 400 naming the problem, not a 503 from the database)."""
    form = {"Content-Type": "application/x-www-form-urlencoded", **JSON}
    cases = [
        (b"name=a%00b", form, "NUL"),
        (b"na%00me=x", form, "NUL"),
        (b'{"name": "a\\u0000b"}', {"Content-Type": "application/json"}, "NUL"),
        (b'{"name": "\\ud800"}', {"Content-Type": "application/json"}, "surrogate"),
        (b'{"\\udfff": "x"}', {"Content-Type": "application/json"}, "surrogate"),
    ]
    for body, headers, words in cases:
        r = await client.post("/f/contact", content=body, headers=headers)
        assert r.status_code == 400, (body, r.text)
        assert words in r.json()["error"]
    r = await client.post("/f/contact", files={"msg": (None, b"a\x00b")}, headers=JSON)
    assert r.status_code == 400
    assert count(db, Submission) == 0


async def test_fast_path_answers_like_the_routed_endpoint(cfg: Config, db: Database) -> None:
    from postwatch.app import create_app
    from postwatch.intake.http import routes

    part = routes(cfg, db)
    assert part.wrap_asgi is not None
    app = part.wrap_asgi(create_app(cfg, db))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.post("/f/contact", data={"n": "1"})
        assert r.status_code == 303 and r.headers["location"] == "https://gym.example/bedankt"
        r = await c.post("/f/bakery/shared", json={"n": "2"})
        assert r.status_code == 201
        assert submission(db, r.json()["id"]).account == "bakery"
        assert (await c.post("/f/nope", json={})).status_code == 404
        assert (
            await c.options("/f/signup", headers={"Origin": "https://gym.example"})
        ).status_code == 204
        assert (await c.get("/healthz")).status_code == 200  # everything else: the app
        assert (await c.get("/f/contact")).status_code == 405
    assert count(db, Submission) == 2
