"""The real mail stack behaves as MAILSTACK.md says (the other tests build on it)."""

from __future__ import annotations

import os
import shutil
import smtplib
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import imapclient
import pytest

from tests.mailstack import MailStack

pytestmark = pytest.mark.mailstack

INFO = "info@gym.example"


def test_delivery_then_bounce_when_full(mailstack: MailStack) -> None:
    mailstack.reset()
    since = mailstack.log_offset()
    mailstack.send("web@example.test", INFO, subject="first")
    line = mailstack.wait_log(r"to=<info@gym\.example>.*status=sent", since=since)
    assert "dsn=2.0.0" in line
    mailstack.fill(INFO)
    used, limit = mailstack.quota(INFO)
    assert limit == 200 and used >= 199
    since = mailstack.log_offset()
    mailstack.send("web@example.test", INFO, subject="too much", size=4000)
    line = mailstack.wait_log(r"to=<info@gym\.example>.*status=bounced", since=since)
    assert "dsn=5.2.2" in line and "Quota exceeded" in line
    # the DSN goes back to the sender's mailbox, through Postfix and Dovecot
    mailstack.wait_log(r"to=<web@example\.test>.*status=sent", since=since)
    assert any(b"Status: 5.2.2" in m for m in mailstack.messages("web@example.test"))
    mailstack.empty(INFO)
    assert mailstack.quota(INFO)[0] == 0


def test_rcpt_port_refuses_over_quota(mailstack: MailStack) -> None:
    mailstack.reset()
    mailstack.fill(INFO)
    since = mailstack.log_offset()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
        mailstack.send("someone@example.test", INFO, port="rcpt", size=4000)
    code, text = exc.value.recipients[INFO]
    assert code == 552 and b"Mailbox is full" in text
    line = mailstack.wait_log(r"NOQUEUE: reject: RCPT from", since=since)
    assert "552 5.2.2 <info@gym.example>" in line
    mailstack.empty(INFO)
    # with room again, the same port accepts
    assert mailstack.send("someone@example.test", INFO, port="rcpt") == {}


def test_unknown_user_refused(mailstack: MailStack) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
        mailstack.send("web@example.test", "nobody@gym.example")
    assert exc.value.recipients["nobody@gym.example"][0] == 550


def test_imap_quota_and_login(mailstack: MailStack) -> None:
    mailstack.reset()
    mailstack.fill(INFO)
    with imapclient.IMAPClient(mailstack.host, port=mailstack.imap_port, ssl=False) as c:
        c.login(INFO, mailstack.password(INFO))
        roots = c.get_quota_root("INBOX")[1]
        assert roots[0].resource == "STORAGE" and roots[0].limit == 200
        assert roots[0].usage >= 199
    mailstack.empty(INFO)


def test_quota_warning_hook_runs(mailstack: MailStack) -> None:
    mailstack.reset()
    since = mailstack.quota_warning_log.stat().st_size
    log = mailstack.quota_warning_log
    mailstack.fill(INFO, percent=85)
    mailstack.wait_log(rf"{INFO} 80$", since=since, log=log)
    mailstack.fill(INFO)
    mailstack.wait_log(rf"{INFO} 95$", since=since, log=log)
    mailstack.empty(INFO)
    mailstack.wait_log(rf"{INFO} 80 below$", since=since, log=log)
    lines = log.read_bytes()[since:].decode().splitlines()
    assert [ln.split()[2] for ln in lines if INFO in ln] == ["80", "95", "80"]
    assert lines[-1].endswith(" below")
    mailstack.empty(INFO)


def test_custom_users_bulk_and_hook_command(
    mailstack_factory: Callable[..., MailStack],
) -> None:
    """The capacity watch's use: many mailboxes, and the hook calling a command."""
    hookdir = Path(tempfile.mkdtemp(prefix="pwms-hook-", dir="/tmp"))
    hookdir.chmod(0o777)
    out = hookdir / "calls.txt"
    cmd = hookdir / "hook.sh"
    cmd.write_text(f'#!/bin/sh\necho "$@" >> {out}\n')
    cmd.chmod(cmd.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    stack = mailstack_factory(
        users=[("small@tiny.example", "pw-small", "100K")],
        bulk=30,
        bulk_quota="5M",
        quota_warning_command=f"{cmd} quota-warning",
    )
    assert len(stack.users) == 31
    assert stack.quota("user00030@bulk.example") == (0, 5 * 1024)
    assert stack.quota("small@tiny.example") == (0, 100)
    since = 0
    stack.fill("small@tiny.example", percent=85)
    stack.wait_log(r"quota-warning --user small@tiny\.example --percent 80$", since=since, log=out)
    assert os.path.getsize(out) > 0
    shutil.rmtree(hookdir)
