"""``investigate --config`` with postwatch in front of the form, on a real Postfix + Dovecot:
each sign-up counted once with where it went, however often a held one was retried
(issue 10, item 8)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from postwatch.cli import app
from postwatch.outbox import retry_now
from postwatch.outbox.wake import wake
from postwatch.store import Database
from tests.loop.test_e2e_mailstack import BOUNCES, INFO, OWNER, Running, job, pw_config, submit
from tests.mailstack import MailStack
from tests.watch.test_service import wait_for

pytestmark = pytest.mark.mailstack


@pytest.fixture(scope="module")
def stack(mailstack_factory: Callable[..., MailStack]) -> MailStack:
    return mailstack_factory(
        users=[(INFO, "info-pw", "200K"), (OWNER, "owner-pw", ""), (BOUNCES, "bounces-pw", "")]
    )


async def test_held_and_retried_sign_ups_count_once(
    stack: MailStack, tmp_path: Path, sqlite_db: Database
) -> None:
    stack.reset()
    stack.fill(INFO)
    cfg = pw_config(tmp_path, stack, sqlite_db, log=True, bounces=False)
    async with Running(cfg, sqlite_db, stack, log=True, bounces=False):
        sids = [submit(sqlite_db, cfg) for _ in range(2)]

        def held(attempts: int) -> bool:
            jobs = [job(sqlite_db, sid, INFO) for sid in sids]
            return all(j is not None and j.state == "held" and j.attempts >= attempts
                       for j in jobs)

        await wait_for(lambda: held(1), timeout=30)
        await wait_for(lambda: stack.message_count(OWNER) == 2, timeout=30)
        for n in (2, 3):  # two more tries while the mailbox is still full
            assert retry_now(sqlite_db, recipient=INFO) == 2
            wake()
            await wait_for(lambda n=n: held(n), timeout=30)  # type: ignore[misc]
        stack.empty(INFO)
        assert retry_now(sqlite_db, recipient=INFO) == 2
        wake()
        await wait_for(lambda: stack.message_count(INFO) == 2, timeout=30)
        await wait_for(lambda: all(
            (j := job(sqlite_db, sid, INFO)) is not None and j.state == "delivered"
            for sid in sids), timeout=30)
    toml = tmp_path / "pw.toml"
    toml.write_text(f'[database]\nurl = "{sqlite_db.url}"\n')
    res = CliRunner().invoke(app, [
        "investigate", "--quiet", "--config", str(toml), "--mail-log", str(stack.postfix_log),
        "--mailbox", INFO, "--form-sender", BOUNCES, "--timezone", "UTC"])
    assert res.exit_code == 0, res.output
    s1, s2, s3 = [x for x in res.stdout.splitlines() if x.strip()]
    assert "postwatch took in 2 sign-ups for info@gym.example" in s1
    assert s2 == (f"Of the 2 sign-ups, 2 reached {INFO} (2 of them also as a fallback copy "
                  f"to {OWNER}); 0 sign-ups lost.")
    assert "refused mail as full" in s3
    # the mail log itself saw 3 tries per sign-up that bounced, and one that arrived
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, [
        "investigate", "--quiet", "--config", str(toml), "--mail-log", str(stack.postfix_log),
        "--mailbox", INFO, "--form-sender", BOUNCES, "--timezone", "UTC", "--json", str(out)])
    assert res.exit_code == 0, res.output
    import json

    d = json.loads(out.read_text())
    assert d["signups"]["total"] == 2 and d["signups"]["both"] == 2 and d["signups"]["lost"] == 0
    assert d["mail"]["form_messages"] >= 8
    assert {s["where"] for s in d["signups"]["list"]} == {"both"}
    assert all(s["copies"] == [OWNER] for s in d["signups"]["list"])
