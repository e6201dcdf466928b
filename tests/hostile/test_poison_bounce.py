"""Issue 11 item 3: one poison message must not stall the bounce mailbox.

A 200 KB mail with 3,000 nested MIME levels raised ``RecursionError`` while parsing; the IMAP
watch took it for a connection problem, reconnected, fetched it again, and never read a later
bounce. Now the depth is bounded before parsing, a message that cannot be read becomes a
``bounce_unparsable`` event, is marked, and the watch goes on.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import imapclient
import pytest
from typer.testing import CliRunner

from postwatch.bounces.classify import classify_path
from postwatch.bounces.imap import KEYWORD, BounceMailboxConfig, BounceMailboxService
from postwatch.bounces.parse import (
    MAX_MIME_DEPTH,
    MAX_PARSE_BYTES,
    MessageKind,
    UnparsableMessage,
    analyse,
    parse_bytes,
)
from postwatch.cli import app
from postwatch.store import Database
from postwatch.store.events import fetch_events
from tests.conftest import make_config
from tests.hostile.inputs import nested_mime, nested_rfc822
from tests.mailstack import MailStack
from tests.watch.test_service import wait_for

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "bounces"
BOUNCES = "bounces@example.test"


@pytest.mark.parametrize("build", [nested_mime, nested_rfc822])
def test_deep_nesting_is_refused_before_parsing(build: object) -> None:
    data = build()  # type: ignore[operator]
    started = time.monotonic()
    with pytest.raises(UnparsableMessage) as err:
        parse_bytes(data)
    assert time.monotonic() - started < 5
    assert "nested" in str(err.value) and str(MAX_MIME_DEPTH) in str(err.value)
    # the headers are still readable, for the event that names the message
    assert err.value.headers.get("From") == "attacker@example.org"


def test_reasonable_nesting_still_parses() -> None:
    msg = parse_bytes(nested_mime(depth=10))
    assert msg.is_multipart()
    assert analyse(msg).kind is MessageKind.NOT_A_BOUNCE


def test_a_huge_bounce_is_read_from_its_head() -> None:
    """Size is bounded before parsing: the report (at the start) is read, the tail dropped."""
    dsn = (FIX / "postfix_dsn_mailbox_full.eml").read_bytes()
    huge = dsn + b"X" * 76 + b"\n" + (b"Y" * 76 + b"\n") * (MAX_PARSE_BYTES // 77 + 10)
    assert len(huge) > MAX_PARSE_BYTES
    report = analyse(parse_bytes(huge))
    assert report.kind is MessageKind.BOUNCE
    assert [f.reason for f in report.failures] == ["mailbox_full"]


def test_classify_bounce_names_the_unparsable_file(tmp_path: Path) -> None:
    (tmp_path / "a_poison.eml").write_bytes(nested_mime())
    shutil.copy(FIX / "postfix_dsn_mailbox_full.eml", tmp_path / "b_real.eml")
    rows = list(classify_path(tmp_path))
    assert [(Path(r["file"]).name, r["kind"]) for r in rows] == [
        ("a_poison.eml", "unparsable"),
        ("b_real.eml", "bounce"),
    ]
    assert "nested" in rows[0]["note"]
    result = CliRunner().invoke(app, ["classify-bounce", str(tmp_path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert lines[0]["file"].endswith("a_poison.eml") and lines[0]["kind"] == "unparsable"
    assert lines[1]["reason"] == "mailbox_full"


def test_classify_bounce_goes_on_after_a_poison_in_an_mbox(tmp_path: Path) -> None:
    real = (FIX / "postfix_dsn_mailbox_full.eml").read_bytes()
    mbox = tmp_path / "bounces.mbox"
    mbox.write_bytes(
        b"From x@y Mon Jan  1 00:00:00 2024\n" + nested_mime().replace(b"\r\n", b"\n")
        + b"\nFrom x@y Mon Jan  1 00:00:00 2024\n" + real + b"\n"
    )
    kinds = [(r["index"], r["kind"]) for r in classify_path(mbox)]
    assert kinds == [(0, "unparsable"), (1, "bounce")]


@pytest.mark.mailstack
async def test_poison_first_then_a_real_bounce_over_imap(
    mailstack: MailStack, tmp_path: Path, sqlite_db: Database
) -> None:
    """Against the real Dovecot: the poison is recorded and marked, the bounce behind it read."""
    mailstack.reset()
    cfg = make_config(tmp_path)
    box = BounceMailboxConfig(
        account="gym", host="127.0.0.1", port=mailstack.imap_port, tls="none",
        user=BOUNCES, password=mailstack.password(BOUNCES), idle_timeout=1,
    )
    mailstack.doveadm("save", "-u", BOUNCES, input=nested_mime())
    mailstack.doveadm(
        "save", "-u", BOUNCES, input=(FIX / "exim_remote_user_unknown.eml").read_bytes()
    )
    svc = BounceMailboxService(cfg, sqlite_db, box)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))

    def kinds() -> list[str]:
        with sqlite_db.session(readonly=True) as s:
            return [e.kind for e in fetch_events(s)]

    try:
        await wait_for(lambda: "bounce_received" in kinds(), timeout=30)
    finally:
        stop.set()
        await task
    assert kinds() == ["bounce_unparsable", "bounce_received"]  # no bounce_source_failed
    with sqlite_db.session(readonly=True) as s:
        [poison] = fetch_events(s, kinds=["bounce_unparsable"])
    assert poison.account == "gym"
    assert poison.data["source"].startswith("bounce:")
    assert poison.data["subject"] == "nested"
    assert "nested" in poison.data["error"]
    with imapclient.IMAPClient("127.0.0.1", port=mailstack.imap_port, ssl=False) as c:
        c.login(BOUNCES, mailstack.password(BOUNCES))
        c.select_folder("INBOX")
        assert c.search(["NOT", "KEYWORD", KEYWORD]) == []
        assert len(c.search(["ALL"])) == 2  # nothing moved or deleted
