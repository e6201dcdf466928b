"""The gym's incident replayed as a hoster runs postwatch: the acceptance test of trust.

A real ``postwatch serve`` (subprocess, its own config file, SQLite), in front of the contact form,
sending through a real Postfix that hands over to Dovecot over LMTP, where info@gym.example has a
200K quota and is full. The owner and the hoster are on webhooks; the mail log is followed and the
quota is read over IMAP, as the sample config recommends. Nobody acknowledges for a while, then the
mailbox is emptied.

What every person must have received, exactly (issue: "one incident is one alert per person"):
- the owner: one "fired" message, then one "resolved";
- the hoster: one escalation, then one "resolved";
- owner@private.example (the fallback): every lead once;
- info@gym.example: every lead once, after the mailbox was emptied;
and ``postwatch investigate --config`` answers "N sign-ups, 0 lost".
"""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.intake.serving import SRC, Serve, free_port
from tests.mailstack import MailStack
from tests.webhooks import WebhookSink

pytestmark = [pytest.mark.mailstack, pytest.mark.slow]

INFO = "info@gym.example"
OWNER = "owner@private.example"
BOUNCES = "bounces@example.test"
LEADS = 12


@pytest.fixture(scope="module")
def stack(mailstack_factory: Callable[..., MailStack]) -> MailStack:
    return mailstack_factory(
        users=[(INFO, "info-pw", "200K"), (OWNER, "owner-pw", ""), (BOUNCES, "bounces-pw", "")]
    )


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    s = WebhookSink()
    yield s
    s.close()


def write_config(path: Path, stack: MailStack, sink: WebhookSink, port: int) -> Path:
    path.write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[database]
url = "sqlite:///{path.parent / 'postwatch.db'}"

[smtp]
host = "127.0.0.1"
port = {stack.smtp_port}
sender = "{BOUNCES}"
timeout = "10s"
final = false

[delivery]
poll_interval = "200ms"
retry_base = "1s"
retry_max = "3s"
full_retry_every = "2s"

[intake]
rate_limit = 0

[[maillogs]]
path = "{stack.postfix_log}"
format = "postfix"

[capacity]
poll_every = "2s"

[alerts]
poll_interval = "200ms"
escalate_after = "5s"
escalation = ["owner", "hoster"]
flap_hold = "3s"
repeat_every = "1h"
timezone = "Europe/Amsterdam"

[[accounts]]
id = "gym"
name = "Sportschool Fit"

[[accounts.forms]]
id = "contact"
recipients = ["{INFO}"]
fallback = ["{OWNER}"]

[[accounts.mailboxes]]
address = "{INFO}"
quota = {{ source = "imap", host = "127.0.0.1", port = {stack.imap_port}, tls = "none", \
user = "{INFO}", password = "{stack.password(INFO)}" }}

[[accounts.contacts]]
name = "Sanne (owner)"
role = "owner"
channels = ["{sink.url('owner')}"]

[[accounts.contacts]]
name = "Hoster on call"
role = "hoster"
channels = ["{sink.url('hoster')}"]
""",
        encoding="utf-8",
    )
    return path


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def message_ids(stack: MailStack, address: str) -> list[str]:
    return [
        str(email.message_from_bytes(raw, policy=email.policy.default)["Message-ID"])
        for raw in stack.messages(address)
    ]


def fallback_sids(stack: MailStack) -> list[str]:
    out = []
    for raw in stack.messages(OWNER):
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        out.append(str(msg.get("X-Postwatch-Submission") or msg["Message-ID"]))
    return out


def test_gym_incident_gives_one_message_per_person_and_loses_nothing(
    stack: MailStack, sink: WebhookSink, tmp_path: Path
) -> None:
    stack.reset()
    stack.fill(INFO)
    port = free_port()
    cfg = write_config(tmp_path / "postwatch.toml", stack, sink, port)
    serve = Serve(cfg, port)
    try:
        # wait until the watch follows the log (it starts at the end of the file)
        time.sleep(1.0)
        ids = []
        for i in range(LEADS):
            r = httpx.post(
                f"http://127.0.0.1:{port}/f/contact",
                json={"name": f"Bezoeker {i}", "email": f"v{i}@example.org",
                      "message": "Proefles graag"},
                timeout=10,
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])

        # every lead reaches the fallback within seconds, once
        wait_until(lambda: stack.message_count(OWNER) >= LEADS, 60, "every lead at the fallback")
        # the owner is told once; nobody acknowledges; the hoster gets the escalation
        wait_until(lambda: len(sink.to("owner")) >= 1, 30, "the owner is told")
        wait_until(lambda: len(sink.to("hoster")) >= 1, 60, "the escalation to the hoster")
        time.sleep(6)  # several quota polls and held retries later: nothing more is sent
        assert len(sink.to("owner")) == 1, sink.titles("owner")
        assert len(sink.to("hoster")) == 1, sink.titles("hoster")

        # the customer makes room: every held lead is delivered, once
        stack.empty(INFO)
        wait_until(lambda: stack.message_count(INFO) >= LEADS, 90, "every lead at info@")
        wait_until(lambda: len(sink.to("owner")) >= 2 and len(sink.to("hoster")) >= 2, 60,
                   "resolved to the owner and the hoster")
        time.sleep(6)  # late quota readings, DSNs and retries must not send anything more
    finally:
        assert serve.terminate() == 0, serve.output()

    # what every person received, kept for a reader of the test run
    (tmp_path / "messages.json").write_text(
        json.dumps([{"to": r["path"], **r["body"]} for r in sink.requests], indent=1),
        encoding="utf-8")
    owner_titles = sink.titles("owner")
    hoster_titles = sink.titles("hoster")
    assert len(owner_titles) == 2, owner_titles
    assert len(hoster_titles) == 2, hoster_titles
    for titles in (owner_titles, hoster_titles):
        assert "resolved" in titles[1].lower(), titles
        assert "resolved" not in titles[0].lower(), titles

    info_ids = message_ids(stack, INFO)
    assert len(info_ids) == LEADS and len(set(info_ids)) == LEADS
    assert stack.message_count(OWNER) == LEADS
    assert len(set(fallback_sids(stack))) == LEADS

    # the forensic answer counts sign-ups from the store: each lead once, none lost
    report_json = tmp_path / "report.json"
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    args = [sys.executable, "-m", "postwatch", "investigate", "--quiet", "--config", str(cfg),
            "--mail-log", str(stack.postfix_log), "--mailbox", INFO, "--form-sender", BOUNCES,
            "--timezone", "UTC"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert f"Of the {LEADS} sign-ups, {LEADS} reached {INFO}" in out.stdout, out.stdout
    assert "0 sign-ups lost." in out.stdout, out.stdout
    out = subprocess.run([*args, "--json", str(report_json)], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    signups = json.loads(report_json.read_text())["signups"]
    assert signups["total"] == LEADS and signups["lost"] == 0, signups
    assert signups["both"] == LEADS, signups
