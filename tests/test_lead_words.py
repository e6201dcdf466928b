"""The service log's words for what happened to a lead (postwatch.lead_words)."""

from __future__ import annotations

from datetime import UTC, datetime

from postwatch.lead_words import LeadOutcome, lead_outcome_words

SID = "01a2328458711f0cfe62e3b71c226815"
INFO = "info@gym.example"
OWNER = "owner@private.example"
AT = datetime(2026, 12, 1, 14, 5, tzinfo=UTC)


def words(**kw: object) -> str:
    base: dict[str, object] = {"submission": SID, "recipient": INFO, "relay": "127.0.0.1:25",
                               "fallback": (OWNER,)}
    return lead_outcome_words(LeadOutcome(**(base | kw)))  # type: ignore[arg-type]


def test_a_relays_250_is_a_hand_over() -> None:
    assert words(result="delivered", reply="250 2.0.0 Ok: queued as 4XyZ") == (
        f"sign-up {SID} for {INFO}: handed to 127.0.0.1:25 (queued as 4XyZ), not yet confirmed")
    assert words(result="delivered", final=True, reply="250 ok") == (
        f"sign-up {SID} for {INFO}: delivered into the mailbox by 127.0.0.1:25")


def test_full_mailbox_held_with_the_copy() -> None:
    assert words(result="held", reason="mailbox_full", first_hold=True, next_attempt=AT,
                 hold_until=AT.replace(day=8)) == (
        f"sign-up {SID} for {INFO}: mailbox full, held, next try 2026-12-01 14:05 UTC, "
        f"until 2026-12-08 14:05 UTC, copy sent to {OWNER}")
    again = words(result="held", downstream=True, next_attempt=AT)
    assert again == (f"sign-up {SID} for {INFO}: bounced after the hand-over: mailbox still "
                     "full, held, next try 2026-12-01 14:05 UTC")


def test_failures_say_who_has_the_lead() -> None:
    assert words(result="failed", reason="user_unknown", reply="550 5.1.1 no such user") == (
        f"sign-up {SID} for {INFO}: refused for good (user unknown: 550 5.1.1 no such user), "
        f"copy sent to {OWNER}")
    assert words(result="failed", reason="rejected", fallback=()).endswith(
        "no fallback recipient: nobody else has this sign-up")
    assert words(result="failed", reason="expired").startswith(
        f"sign-up {SID} for {INFO}: gave up after the retry deadline (expired")
    assert words(result="deferred", reason="network", reply="connection refused",
                 next_attempt=AT) == (
        f"sign-up {SID} for {INFO}: not taken yet (network: connection refused), "
        "next try 2026-12-01 14:05 UTC")
    assert words(result="confirmed").endswith("confirmed in the mailbox (the mail server "
                                              "reports it delivered)")
    assert words(result="delivered", role="fallback", recipient=OWNER, final=True).startswith(
        f"copy of sign-up {SID} for {OWNER}: delivered")
