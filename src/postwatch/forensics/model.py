"""The incident model ``investigate`` builds; renderers turn it into JSON, HTML and CSV."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from postwatch.forensics.inputs import InputFile
from postwatch.observations import Episode  # the one episode rule's episodes


@dataclass(slots=True)
class FormMessage:
    """One form message and what happened to it for the mailbox."""

    key: str
    mta: str
    queue_id: str | None
    arrived: datetime
    sender: str
    outcome: str  # delivered | bounced | pending
    reason: str | None  # for not delivered: the reason of its last failure/deferral
    permanent: bool | None
    status: str | None
    attempts: int
    last_attempt: datetime | None
    delivered_at: datetime | None
    other_recipients: list[str]
    evidence: str | None
    submission: datetime | None = None  # the matched POST when matched by time


@dataclass(slots=True)
class SignUp:
    """One sign-up postwatch took in for the mailbox (``--config``), counted once however many
    times it was retried, with where it went."""

    submission: str
    received: datetime
    form: str
    #: primary (the mailbox has it) | fallback (only the fallback copy arrived) | both |
    #: waiting (nobody has it yet, postwatch still tries) | lost (nobody has it, nothing left)
    where: str
    reached_mailbox: datetime | None = None
    copies: list[str] = field(default_factory=list)  # fallback recipients that got it
    last_reason: str | None = None  # why the mailbox did not take it (if it did not)


SIGNUP_PLACES = ("primary", "fallback", "both", "waiting", "lost")


@dataclass(slots=True)
class HourBucket:
    start: datetime  # local time, aware
    submissions: int = 0
    delivered: int = 0
    mailbox_full: int = 0


@dataclass
class Report:
    """Everything the renderers need."""

    mailbox: str
    form_paths: list[str]
    form_sender: str | None
    vhost: str | None
    timezone: str
    since: datetime | None
    until: datetime | None
    generated_at: datetime
    matching: str  # "form_sender" | "time"
    submissions_total: int = 0
    submissions_rejected: int = 0
    submissions_by_status: dict[int, int] = field(default_factory=dict)
    submissions_unmatched: int | None = None
    form_messages: list[FormMessage] = field(default_factory=list)
    first_mailbox_full: datetime | None = None
    last_mailbox_full: datetime | None = None
    mailbox_full_failures: int = 0  # in the window, all senders
    rejected_at_rcpt: int = 0  # NOQUEUE / exim RCPT rejections for the mailbox (window)
    dovecot_quota_lines: int = 0  # Dovecot "Quota exceeded" lines for the mailbox (window)
    received_before_full_form: int = 0
    received_before_full_other: int = 0
    episodes: list[Episode] = field(default_factory=list)
    hours: list[HourBucket] = field(default_factory=list)
    inputs: list[InputFile] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    quota_history: list[dict[str, Any]] = field(default_factory=list)
    mail_coverage: tuple[datetime | None, datetime | None] = (None, None)
    access_coverage: tuple[datetime | None, datetime | None] = (None, None)
    #: postwatch's own sign-ups for the mailbox (``--config``); None: not read
    signups: list[SignUp] | None = None
    #: the zone times are shown in (``--display-timezone``); default: ``timezone``
    display_timezone: str | None = None

    def signup_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(SIGNUP_PLACES, 0)
        for s in self.signups or ():
            counts[s.where] = counts.get(s.where, 0) + 1
        return counts

    # --- derived numbers ---------------------------------------------------------------------
    def count(self, outcome: str) -> int:
        return sum(1 for m in self.form_messages if m.outcome == outcome)

    @property
    def by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.form_messages:
            if m.outcome != "delivered":
                key = m.reason or "unknown"
                out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def recovered_submitters(self) -> list[str]:
        found: set[str] = set()
        for m in self.form_messages:
            if m.outcome != "delivered":
                found.update(m.other_recipients)
        return sorted(found)
