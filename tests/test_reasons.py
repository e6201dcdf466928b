"""The shared failure-reason taxonomy, driven by real phrasings (tests/fixtures/reasons.tsv)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postwatch.reasons import (
    Reason,
    Verdict,
    classify,
    classify_smtp_reply,
    extract_code,
    extract_status,
)

FIXTURE = Path(__file__).parent / "fixtures" / "reasons.tsv"


def _rows() -> list[tuple[str, str, str, str, str]]:
    rows = []
    for line in FIXTURE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        reason, permanent, code, context, text = line.split("\t", 4)
        rows.append((reason, permanent, code, context, text))
    return rows


ROWS = _rows()


def test_fixture_covers_every_reason() -> None:
    assert {r[0] for r in ROWS} == {r.value for r in Reason}
    assert len(ROWS) >= 60


@pytest.mark.parametrize(("reason", "permanent", "code", "context", "text"), ROWS)
def test_real_phrasings(reason: str, permanent: str, code: str, context: str, text: str) -> None:
    verdict = classify(
        text,
        code=None if code == "-" else int(code),
        context=None if context == "-" else context,
    )
    assert verdict.reason == Reason(reason), text
    if permanent != "-":
        assert verdict.permanent is (permanent == "1"), text


def test_reason_values_are_lowercase_names() -> None:
    for r in Reason:
        assert r.value == r.name.lower()
    assert str(Reason.MAILBOX_FULL) == "mailbox_full"


def test_status_code_first_where_specific() -> None:
    assert classify("something odd", status="5.2.2").reason is Reason.MAILBOX_FULL
    assert classify("something odd", status="5.1.1").reason is Reason.USER_UNKNOWN
    assert classify("bla", status="4.4.7").reason is Reason.EXPIRED
    # 5.0.0 is not specific: the text decides
    assert classify("550 5.0.0 user unknown").reason is Reason.USER_UNKNOWN


def test_providers_say_over_quota_with_other_codes() -> None:
    assert classify("550 5.1.1 <a@b> over quota").reason is Reason.MAILBOX_FULL
    v = classify("450 4.3.0 <a@b> Mailbox over quota")
    assert v == Verdict(Reason.MAILBOX_FULL, False, "4.3.0", 450)


def test_5_2_2_from_postfix_local_is_not_necessarily_a_quota() -> None:
    text = (
        "cannot update mailbox /var/mail/info for user info. error writing message: File too large"
    )
    assert classify(text, status="5.2.2", context="postfix/local").reason is (
        Reason.MESSAGE_TOO_BIG
    )
    assert classify("", status="5.2.2", context="postfix/local").reason is Reason.OTHER
    assert classify("", status="5.2.2", context="postfix/lmtp").reason is Reason.MAILBOX_FULL


def test_permanence_from_class() -> None:
    assert classify("mailbox full", status="4.2.2").permanent is False
    assert classify("mailbox full", status="5.2.2").permanent is True
    assert classify("mailbox full", code=452).permanent is False
    assert classify("user unknown").permanent is True
    assert classify("Connection refused").permanent is False


def test_classify_smtp_reply_multiline_flattened() -> None:
    v = classify_smtp_reply(
        552,
        "552-5.2.2 The email account that you tried to reach is over "
        "quota. 552 5.2.2 Please direct the recipient to ... - gsmtp",
    )
    assert v == Verdict(Reason.MAILBOX_FULL, True, "5.2.2", 552)
    v = classify_smtp_reply(550, "5.1.1 <x@y>: Recipient address rejected: User unknown")
    assert v == Verdict(Reason.USER_UNKNOWN, True, "5.1.1", 550)
    v = classify_smtp_reply(421, "Service not available, closing transmission channel")
    assert v.reason is Reason.NETWORK and v.permanent is False and v.status is None


def test_extractors_ignore_versions_and_addresses() -> None:
    assert extract_status("host mx[192.0.2.1] said: 552 5.2.2 full") == "5.2.2"
    assert extract_status("Exim 4.96.1 here") is None
    assert extract_status("relay 10.5.2.2.3") is None
    assert extract_code("host mx[192.0.2.1] said: 552 5.2.2 full") == 552
    assert extract_code("connect to x[192.0.2.1]:25: Connection refused") is None


@given(
    st.text(),
    st.one_of(st.none(), st.integers()),
    st.one_of(st.none(), st.text()),
    st.one_of(st.none(), st.text()),
)
def test_classify_never_raises(
    text: str, code: int | None, status: str | None, context: str | None
) -> None:
    v = classify(text, code=code, status=status, context=context)
    assert isinstance(v.reason, Reason)
    assert v.status is None or v.status[0] in "245"


@given(st.integers(min_value=400, max_value=599), st.text())
def test_classify_smtp_reply_never_raises(code: int, message: str) -> None:
    v = classify_smtp_reply(code, message)
    assert v.code == code
    assert v.permanent is ((v.status or str(code))[0] == "5")
