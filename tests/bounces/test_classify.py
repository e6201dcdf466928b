"""Bounce parsing: RFC 3464 DSNs, non-standard bounces, and the messages that are not failures."""

from __future__ import annotations

import json
import mailbox
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from postwatch.bounces.classify import classify_path
from postwatch.bounces.parse import MessageKind, analyse, parse_bytes
from postwatch.cli import app

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "bounces"

# fixture -> [(recipient, status, reason, permanent)] or the kind of a non-failure
EXPECTED: dict[str, list[tuple[str, str | None, str, bool]] | str] = {
    "postfix_dsn_mailbox_full.eml": [("info@gym.example", "5.2.2", "mailbox_full", True)],
    "exim_mailbox_full.eml": [("info@gym.example", None, "mailbox_full", True)],
    "exim_remote_user_unknown.eml": [("nobody@customer.example", "5.1.1", "user_unknown", True)],
    "exim_delay.eml": [("info@gym.example", None, "mailbox_full", False)],
    "qmail_over_quota.eml": [
        ("info@gym.example", "5.2.2", "mailbox_full", True),
        ("other@gym.example", "5.1.1", "user_unknown", True),
    ],
    "sendmail_user_unknown.eml": [("jan@oldhost.example", "5.1.1", "user_unknown", True)],
    "exchange_ndr_text.eml": [("kim@contoso.example", "5.1.1", "user_unknown", True)],
    "exchange_online_dsn_quota.eml": [("lee@fabrikam.example", "5.2.2", "mailbox_full", True)],
    "gmail_dsn_over_quota.eml": [("sam@gmail.example", "5.2.2", "mailbox_full", True)],
    "gmail_legacy_text.eml": [("nosuchuser@gmail.example", "5.1.1", "user_unknown", True)],
    "yahoo_user_unknown.eml": [("gone@yahoo.example", None, "user_unknown", True)],
    "provider_over_quota_551.eml": [("piet@isp.example", "5.1.1", "mailbox_full", True)],
    "dsn_mixed_failed_and_delayed.eml": [
        ("a@far.example", "5.4.4", "host_unknown", True),
        ("b@slow.example", "4.4.1", "network", False),
    ],
    "postfix_delay_warning.eml": [("info@gym.example", "4.2.2", "mailbox_full", False)],
    "delivery_receipt.eml": "delivery_receipt",
    "read_receipt.eml": "read_receipt",
    "arf_abuse_report.eml": "feedback_report",
    "auto_reply.eml": "auto_reply",
    "vacation_subject_only.eml": "auto_reply",
    "plain_message.eml": "not_a_bounce",
}


def test_every_fixture_is_in_the_table() -> None:
    assert sorted(p.name for p in FIX.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture(name: str) -> None:
    rows = list(classify_path(FIX / name))
    want = EXPECTED[name]
    if isinstance(want, str):
        assert len(rows) == 1 and rows[0]["kind"] == want and rows[0]["failed"] is False
        return
    got = [(r["recipient"], r["status"], r["reason"], r["permanent"]) for r in rows]
    assert got == want
    for r in rows:
        assert r["failed"] is True and r["diagnostic"]
        assert set(r) >= {"file", "index", "recipient", "status", "reason", "permanent"}


def test_original_message_id_links_back_to_the_form_mail() -> None:
    rows = list(classify_path(FIX / "postfix_dsn_mailbox_full.eml"))
    assert rows[0]["original_message_id"] == "<sub-42.contact.gym@postwatch.test>"
    rows = list(classify_path(FIX / "exchange_online_dsn_quota.eml"))
    assert rows[0]["original_message_id"] == "<sub-44.contact.gym@postwatch.test>"


def test_mbox_and_maildir(tmp_path: Path) -> None:
    names = ["postfix_dsn_mailbox_full.eml", "auto_reply.eml", "qmail_over_quota.eml"]
    box = mailbox.mbox(str(tmp_path / "bounces.mbox"))
    md = mailbox.Maildir(str(tmp_path / "Maildir"))
    for n in names:
        box.add((FIX / n).read_bytes())
        md.add((FIX / n).read_bytes())
    box.flush()
    box.close()
    rows = list(classify_path(tmp_path / "bounces.mbox"))
    assert [(r["index"], r["kind"], r["recipient"]) for r in rows] == [
        (0, "bounce", "info@gym.example"),
        (1, "auto_reply", None),
        (2, "bounce", "info@gym.example"),
        (2, "bounce", "other@gym.example"),
    ]
    rows = list(classify_path(tmp_path / "Maildir"))
    assert sorted(r["recipient"] or "-" for r in rows) == sorted(
        ["info@gym.example", "-", "info@gym.example", "other@gym.example"]
    )
    assert all(r["file"].startswith(str(tmp_path / "Maildir")) for r in rows)


def test_cli_prints_json_lines_and_names_a_missing_path(tmp_path: Path) -> None:
    shutil.copy(FIX / "gmail_dsn_over_quota.eml", tmp_path / "a.eml")
    res = CliRunner().invoke(app, ["classify-bounce", str(tmp_path / "a.eml")])
    assert res.exit_code == 0, res.output
    row = json.loads(res.output.strip())
    assert row["recipient"] == "sam@gmail.example" and row["reason"] == "mailbox_full"
    res = CliRunner().invoke(app, ["classify-bounce", str(tmp_path / "missing.eml")])
    assert res.exit_code == 2
    assert "missing.eml: no such file or folder" in res.output


def test_failures_only(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["classify-bounce", "--failures-only", str(FIX)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in res.output.splitlines()]
    assert rows and all(r["failed"] for r in rows)


_fixture_bytes = [p.read_bytes() for p in sorted(FIX.glob("*.eml"))]


@settings(max_examples=200, deadline=None)
@given(
    idx=st.integers(min_value=0, max_value=len(_fixture_bytes) - 1),
    cut=st.integers(min_value=0, max_value=5000),
    junk=st.binary(max_size=200),
)
def test_analyse_never_raises_on_damaged_bounces(idx: int, cut: int, junk: bytes) -> None:
    data = _fixture_bytes[idx]
    damaged = data[:cut] + junk + data[cut + len(junk) :]
    report = analyse(parse_bytes(damaged))
    assert isinstance(report.kind, MessageKind)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_analyse_never_raises_on_any_bytes(data: bytes) -> None:
    analyse(parse_bytes(data))


_local = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12
).filter(lambda s: s[0].isalnum() and s[-1].isalnum() and ".." not in s)
_rcpt = st.tuples(
    _local,
    st.sampled_from(["gym.example", "mail.example.test", "x-y.example"]),
    st.sampled_from(["failed", "delayed", "delivered"]),
    st.integers(min_value=0, max_value=7),
    st.integers(min_value=0, max_value=9),
)


@settings(max_examples=150, deadline=None)
@given(rcpts=st.lists(_rcpt, min_size=1, max_size=6, unique_by=lambda r: (r[0], r[1])))
def test_dsn_round_trip(rcpts: list[tuple[str, str, str, int, int]]) -> None:
    """A DSN built from random recipients parses back to exactly its failed/delayed ones."""
    blocks = []
    want = []
    for local, domain, action, subject, detail in rcpts:
        cls = {"failed": 5, "delayed": 4, "delivered": 2}[action]
        status = f"{cls}.{subject}.{detail}"
        addr = f"{local}@{domain}"
        blocks.append(
            f"Final-Recipient: rfc822; {addr}\nAction: {action}\nStatus: {status}\n"
            f"Diagnostic-Code: smtp; {cls}50 {status} something about {addr}\n"
        )
        if action != "delivered":
            want.append((addr, status, action, action == "failed"))
    raw = (
        "From: MAILER-DAEMON@mail.example\nTo: web@example.test\nSubject: report\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BB"\n\n'
        "--BB\nContent-Type: text/plain\n\nreport\n\n--BB\n"
        "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mail.example\n\n"
        + "\n".join(blocks)
        + "\n--BB--\n"
    )
    report = analyse(parse_bytes(raw.encode()))
    got = sorted((f.recipient, f.status, f.action, f.permanent) for f in report.failures)
    assert got == sorted(want)
    if not want:
        assert report.kind is MessageKind.DELIVERY_RECEIPT
    elif any(w[2] == "failed" for w in want):
        assert report.kind is MessageKind.BOUNCE
    else:
        assert report.kind is MessageKind.DELAY
