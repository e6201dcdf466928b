"""Header injection is impossible and postwatch is never a relay.

Checked where it matters: on the receiving SMTP server, by parsing what arrived, and as a
property of ``compose`` over arbitrary text (hypothesis).
"""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postwatch.config import Config
from postwatch.delivery.compose import MailInput, compose, one_line, single_address
from postwatch.delivery.worker import DeliveryWorker
from postwatch.store import Database
from tests.conftest import make_config
from tests.delivery.conftest import drain, submit
from tests.smtpd import SmtpSink

INFO = "info@gym.example"
EXPECTED_HEADERS = {
    "from", "to", "reply-to", "subject", "date", "message-id", "x-postwatch-submission",
    "x-postwatch-form", "x-mailer", "mime-version", "content-type",
}
EVIL = "evil@attacker.example"

NASTY = [
    "x\r\nBcc: " + EVIL,
    "x\nBcc: " + EVIL,
    "x\rBcc: " + EVIL,
    "x\r\n\r\nbody injected",
    "x\x00Bcc: " + EVIL,
    "=?utf-8?q?x=0D=0ABcc:_" + EVIL + "?=",
    "=?utf-8?b?eA0KQmNjOiBldmlsQGF0dGFja2VyLmV4YW1wbGU=?=",  # "x\r\nBcc: evil@..."
    "x\u2028Bcc: " + EVIL,
    "x\x85Bcc: " + EVIL,
    "A" * 5000,
    ("word " * 400) + "\r\nBcc: " + EVIL,
]


def _header_names(raw: bytes) -> set[str]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    msg = email.message_from_bytes(head + b"\r\n\r\n", policy=email.policy.SMTP)
    return {k.lower() for k in msg}


@pytest.mark.parametrize("nasty", NASTY, ids=range(len(NASTY)))
def test_no_header_injection_through_any_field(
    db: Database, dconfig: Config, smtp_sink: SmtpSink, nasty: str
) -> None:
    if not db.is_sqlite:
        # PostgreSQL cannot store NUL in text; the intake refuses it with 400 before it gets here
        # (tests/intake/test_http.py), so the rest of the nasty value is what can reach the mail
        nasty = nasty.replace("\x00", "")
    fields = {
        "name": nasty,
        "subject": nasty,
        "email": nasty,
        "message": nasty,
        nasty[:200]: "a field whose name is nasty",
    }
    submit(db, dconfig, fields)
    drain(DeliveryWorker(dconfig, db))
    [got] = smtp_sink.messages
    assert got.rcpt_tos == [INFO]
    names = _header_names(got.data)
    assert names <= EXPECTED_HEADERS, names - EXPECTED_HEADERS
    assert "reply-to" not in names  # the email field is not a single valid address
    msg = got.message
    for h in ("Subject", "From", "To", "Message-ID"):
        value = str(msg[h])
        assert "\r" not in value and "\n" not in value and "\x00" not in value
    assert msg["To"] == INFO
    assert EVIL not in str(msg["To"]) and msg["Cc"] is None and msg["Bcc"] is None
    # every header line the server saw is short (folded), and the body still has the text
    head = got.data.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    assert msg.get_body(("plain",)) is not None


@pytest.mark.parametrize(
    "value",
    [
        "a@example.org, " + EVIL,
        "a@example.org;" + EVIL,
        "Someone <" + EVIL + ">",
        '"a@example.org" <' + EVIL + ">",
        "a@example.org\r\nBcc: " + EVIL,
        "a@example.org\x00",
        "a@[127.0.0.1]",
        "(comment)a@example.org",
        "a@example",
        "zoë@example.org",
        ["a@example.org", EVIL],
        "",
    ],
)
def test_reply_to_only_for_a_single_plain_address(value: object) -> None:
    assert single_address(value) is None


def test_reply_to_accepts_plain_addresses() -> None:
    assert single_address(" Jan.de-Vries+lead@Mail.Example.ORG ") == (
        "Jan.de-Vries+lead@mail.example.org"
    )
    assert single_address(["a@example.org"]) == "a@example.org"


def test_no_relay(db: Database, dconfig: Config, smtp_sink: SmtpSink) -> None:
    fields = {
        "email": "visitor@example.org",
        "to": EVIL,
        "cc": EVIL,
        "bcc": EVIL,
        "recipients": [EVIL, "second@attacker.example"],
        "recipient": EVIL,
        "_to": EVIL,
        "fallback": EVIL,
        "Bcc": EVIL,
        "message": "relay me",
    }
    sid = submit(db, dconfig, fields)
    drain(DeliveryWorker(dconfig, db))
    [got] = smtp_sink.messages
    assert got.rcpt_tos == [INFO]
    assert {a.recipient for a in smtp_sink.attempts} == {INFO}
    msg = got.message
    assert msg["To"] == INFO and msg["Cc"] is None and msg["Bcc"] is None
    assert msg["Reply-To"].addresses[0].addr_spec == "visitor@example.org"
    assert EVIL in msg.get_body(("plain",)).get_content()  # shown as data, not used
    from tests.delivery.conftest import jobs

    assert set(jobs(db, sid)) == {INFO}


def test_no_relay_through_fallback(db: Database, dconfig: Config, smtp_sink: SmtpSink) -> None:
    smtp_sink.set(INFO, "unknown")
    submit(db, dconfig, {"email": EVIL, "fallback": EVIL, "to": EVIL})
    drain(DeliveryWorker(dconfig, db))
    assert {r for m in smtp_sink.messages for r in m.rcpt_tos} == {"owner@private.example"}


_config_cache: dict[str, Config] = {}


def _config(tmp: Path) -> Config:
    if "c" not in _config_cache:
        _config_cache["c"] = make_config(tmp)
    return _config_cache["c"]


text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300
) | st.sampled_from(NASTY)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=text, subj=text, mail=text, body=text, key=text)
def test_compose_property_no_new_headers(
    tmp_path: Path, name: str, subj: str, mail: str, body: str, key: str
) -> None:
    cfg = _config(tmp_path)
    fields = {"name": name, "subject": subj, "email": mail, "message": body, key or "k": body}
    msg = compose(cfg, MailInput(
        submission_id="0" * 32, account="gym", form="contact",
        received_at=datetime(2026, 11, 29, 12, 0, tzinfo=UTC), fields=fields, attachments=(),
        recipient=INFO, role="primary", message_id="<x.y@hoster.example>",
    ))
    raw = msg.as_bytes()
    names = _header_names(raw.replace(b"\n", b"\r\n") if b"\r\n" not in raw else raw)
    assert names <= EXPECTED_HEADERS
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["To"] == INFO
    assert parsed.get_all("To") == [INFO]
    assert "\n" not in str(parsed["Subject"]) and "\r" not in str(parsed["Subject"])
    assert one_line(subj, 80) in str(parsed["Subject"]) or not one_line(subj, 80)
