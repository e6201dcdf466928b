"""What happened to one lead, in words: the service log's one line per delivery outcome.

An operator reading ``journalctl -u postwatch`` should see what became of a sign-up without
knowing postwatch's job states: "handed to the relay, not yet confirmed" is not "delivered",
a full mailbox says who gets the copy, and a bounce learned after the 250 says so.

:func:`lead_outcome_words` is the one place that words an outcome. The delivery worker calls it
for each reply; the outcome transitions (a direct reply, a mail log line, a bounce notice) call
it too, so the same outcome reads the same wherever it was learned. Pure: no store, no config.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["LeadOutcome", "lead_outcome_words"]

_QUEUED_AS = re.compile(r"queued as ([0-9A-Za-z]+)")


@dataclass(frozen=True)
class LeadOutcome:
    """One outcome of one delivery job, as the transition knows it."""

    submission: str
    recipient: str
    #: delivered | confirmed (the MTA's log or a DSN says: in the mailbox) | deferred | held |
    #: failed | lost (the worker's claim was taken over; nothing recorded)
    result: str
    role: str = "primary"  # primary | fallback
    reason: str | None = None  # postwatch.reasons.Reason value
    reply: str = ""  # the SMTP reply line or the log line / DSN diagnostic
    relay: str | None = None  # "HOST:PORT" the worker handed the mail to
    final: bool = False  # the relay is the mailbox server ([smtp] final = true)
    downstream: bool = False  # learned after the 250 (mail log or bounce notice)
    first_hold: bool = False  # this outcome started the hold (the fallback copies go now)
    fallback: Sequence[str] = ()  # the form's fallback recipients
    next_attempt: datetime | None = None
    hold_until: datetime | None = None


def _when(at: datetime | None) -> str:
    if at is None:
        return "?"
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _why(o: LeadOutcome) -> str:
    detail = " ".join(o.reply.split())[:200]
    reason = (o.reason or "").replace("_", " ")
    if reason and detail:
        return f"{reason}: {detail}"
    return reason or detail or "no reason given"


def _copies(o: LeadOutcome, *, lost_here: bool) -> str:
    others = [r for r in o.fallback if r != o.recipient]
    if o.role != "primary":
        return ""
    if others:
        return f", copy sent to {', '.join(others)}"
    if lost_here:
        return "; no fallback recipient: nobody else has this sign-up"
    return "; no fallback recipient"


def lead_outcome_words(o: LeadOutcome) -> str:
    """One line: "sign-up ID for ADDRESS: what happened[, and what happens next]"."""
    who = "sign-up" if o.role == "primary" else "copy of sign-up"
    head = f"{who} {o.submission} for {o.recipient}: "
    relay = o.relay or "the mail server"
    if o.result == "delivered":
        if o.final:
            return head + f"delivered into the mailbox by {relay}"
        m = _QUEUED_AS.search(o.reply)
        queued = f" (queued as {m.group(1)})" if m else ""
        return head + f"handed to {relay}{queued}, not yet confirmed"
    if o.result == "confirmed":
        return head + "confirmed in the mailbox (the mail server reports it delivered)"
    if o.result == "held":
        after = "bounced after the hand-over: " if o.downstream else ""
        full = "mailbox full" if o.first_hold else "mailbox still full"
        plan = f"held, next try {_when(o.next_attempt)}"
        if o.hold_until is not None:
            plan += f", until {_when(o.hold_until)}"
        copies = _copies(o, lost_here=False) if o.first_hold else ""
        return head + f"{after}{full}, {plan}{copies}"
    if o.result == "deferred":
        if o.downstream:
            return head + f"delayed at the mail server ({_why(o)}); it retries by itself"
        return head + f"not taken yet ({_why(o)}), next try {_when(o.next_attempt)}"
    if o.result == "failed":
        after = "bounced after the hand-over" if o.downstream else "refused for good"
        if o.reason == "expired":
            after = "gave up after the retry deadline"
        return head + f"{after} ({_why(o)}){_copies(o, lost_here=True)}"
    if o.result == "lost":
        return head + (
            f"this worker's claim was taken over before it recorded the reply ({_why(o)}); "
            "the other worker sends it"
        )
    return head + f"{o.result} ({_why(o)})"
