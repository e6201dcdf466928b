"""The one failure-reason taxonomy of postwatch.

SMTP replies from postwatch's own delivery worker, MTA log lines and bounce messages all map to
the same small set of :class:`Reason` values plus a temporary/permanent flag (:class:`Verdict`).

Decision order (see :func:`classify`):

1. A few diagnostic phrases are stronger than any status code: "over quota" / "mailbox full"
   (providers send them with 5.1.1, 4.3.0, 5.7.1...), rate limiting (Gmail's 4.2.1 "receiving
   mail too quickly"), and "File too large" (Postfix ``local`` reports its mailbox_size_limit
   / EFBIG as 5.2.2, which is not a quota).
2. Otherwise an enhanced status code (RFC 3463) that is *specific* decides (5.2.2 mailbox full,
   5.1.1 user unknown, 5.7.x rejected, 4.4.7 expired, ...).
3. Otherwise the diagnostic text decides (ordered phrase table, first match wins).
4. Otherwise the basic SMTP code (551/553 user unknown, 552 storage, 421 network...).
5. Otherwise :attr:`Reason.OTHER`.

``permanent`` comes from the class of the enhanced status code, else of the basic code
(5 = permanent, 4 = temporary), else a judgement from the text and the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

__all__ = [
    "Reason",
    "Verdict",
    "classify",
    "classify_smtp_reply",
    "extract_code",
    "extract_status",
]


class Reason(StrEnum):
    """Why a delivery failed (or was deferred)."""

    MAILBOX_FULL = "mailbox_full"
    USER_UNKNOWN = "user_unknown"
    HOST_UNKNOWN = "host_unknown"
    SUSPENDED = "suspended"
    REJECTED = "rejected"
    MESSAGE_TOO_BIG = "message_too_big"
    RATE_LIMITED = "rate_limited"
    EXPIRED = "expired"
    NETWORK = "network"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A classified failure: the reason, whether retrying can help, and the codes seen."""

    reason: Reason
    permanent: bool
    status: str | None  # enhanced status code like "5.2.2" if known
    code: int | None  # basic SMTP code like 552 if known


# --- enhanced status codes (RFC 3463 + common practice) -------------------------------------
# Keyed by "subject.detail"; only codes whose meaning is specific enough to decide on their own.
_STATUS_REASON: dict[str, Reason] = {
    "1.1": Reason.USER_UNKNOWN,  # bad destination mailbox address
    "1.2": Reason.HOST_UNKNOWN,  # bad destination system address
    "1.3": Reason.USER_UNKNOWN,  # bad destination mailbox address syntax
    "1.6": Reason.USER_UNKNOWN,  # destination mailbox has moved
    "1.10": Reason.USER_UNKNOWN,  # RFC 7505 null MX / Exchange RecipientNotFound
    "2.1": Reason.SUSPENDED,  # mailbox disabled, not accepting messages
    "2.2": Reason.MAILBOX_FULL,  # mailbox full
    "2.3": Reason.MESSAGE_TOO_BIG,  # message length exceeds administrative limit
    "3.4": Reason.MESSAGE_TOO_BIG,  # message too big for system
    "4.1": Reason.NETWORK,  # no answer from host
    "4.2": Reason.NETWORK,  # bad connection
    "4.3": Reason.HOST_UNKNOWN,  # directory server failure (DNS)
    "4.4": Reason.HOST_UNKNOWN,  # unable to route
    "4.7": Reason.EXPIRED,  # delivery time expired
    "5.3": Reason.RATE_LIMITED,  # too many recipients
    "7.1": Reason.REJECTED,  # delivery not authorized, message refused
    "7.2": Reason.REJECTED,
    "7.7": Reason.REJECTED,
    "7.8": Reason.REJECTED,  # authentication credentials invalid
    "7.9": Reason.REJECTED,
    "7.13": Reason.SUSPENDED,  # user account disabled (RFC 3463 update)
    "7.23": Reason.REJECTED,  # SPF
    "7.25": Reason.REJECTED,  # reverse DNS
    "7.26": Reason.REJECTED,  # authentication (DMARC/DKIM)
    "7.27": Reason.REJECTED,
    "7.28": Reason.RATE_LIMITED,  # Gmail: unusual rate of unsolicited mail
    "7.606": Reason.REJECTED,  # Microsoft: banned sender IP
    "7.708": Reason.REJECTED,
}

# --- diagnostic phrases, lowercase substrings; first category that matches wins ---------------
_STRONG_PHRASES: tuple[tuple[Reason, tuple[str, ...]], ...] = (
    (
        Reason.RATE_LIMITED,
        (
            "sending quota",
            "receiving mail too quickly",
            "receiving mail at a rate",
            "rate limit",
            "ratelimit",
            "rate-limit",
            "too many messages",
            "too many connections",
            "too many concurrent",
            "throttl",
            "exceeded the rate",
            "sending limit",
            "try again later, closing connection",
            "unexpected volume",
        ),
    ),
    (
        Reason.MAILBOX_FULL,
        (
            "quota exceeded",
            "quota exceed",
            "exceeded quota",
            "exceeds quota",
            "exceeded its quota",
            "exceeded their quota",
            "exceeded the quota",
            "quotaexceeded",
            "over quota",
            "overquota",
            "over the quota",
            "over its quota",
            "quota full",
            "quota reached",
            "quota limit",
            "diskspace quota",
            "disk quota",
            "mailbox is full",
            "mailbox full",
            "mailbox is over",
            "mailbox has exceeded",
            "mailbox size limit exceeded",
            "mailbox exceeds",
            "mailfolder is full",
            "mail box full",
            "inbox is full",
            "account is full",
            "user is over",
            "storage capacity exceeded",
            "storage allocation",
            "exceeded storage",
            "insufficient storage for",
            "overdrawn",
            "no more space in mailbox",
            "out of storage space",
            "quota",  # last resort inside this group: any other mention of a quota
        ),
    ),
    (Reason.MESSAGE_TOO_BIG, ("file too large",)),
)

_PHRASES: tuple[tuple[Reason, tuple[str, ...]], ...] = (
    (
        Reason.MESSAGE_TOO_BIG,
        (
            "message too big",
            "message too large",
            "message is too large",
            "message is too big",
            "message size exceeds",
            "message size limit",
            "message exceeded",
            "message exceeds",
            "exceeds size limit",
            "size exceeds",
            "exceeds the maximum",
            "size limit exceeded",
            "message length exceeds",
            "too large",
            "too big",
        ),
    ),
    (
        Reason.USER_UNKNOWN,
        (
            "user unknown",
            "unknown user",
            "no such user",
            "user not found",
            "user doesn't have",
            "user does not exist",
            "recipient not found",
            "recipnotfound",
            "recipientnotfound",
            "unknown recipient",
            "no such recipient",
            "invalid recipient",
            "recipient unknown",
            "recipient does not exist",
            "address does not exist",
            "address not found",
            "address unknown",
            "unknown address",
            "mailbox not found",
            "mailbox unavailable",
            "mailbox does not exist",
            "no such mailbox",
            "invalid mailbox",
            "not a valid mailbox",
            "bad destination mailbox",
            "no mailbox here",
            "unknown local part",
            "unrouteable address",
            "undeliverable address",
            "account does not exist",
            "account that you tried to reach does not exist",
            "doesn't exist",
            "does not exist",
            "no longer available",
        ),
    ),
    (
        Reason.HOST_UNKNOWN,
        (
            "host or domain name not found",
            "name service error",
            "host not found",
            "domain not found",
            "unknown host",
            "unrouteable mail domain",
            "domain does not exist",
            "no mx record",
            "nxdomain",
            "dns error",
            "null mx",
            "mx records point to non-existent",
            "all relevant mx records",
            "hostname lookup failed",
            "unroutable domain",
        ),
    ),
    (
        Reason.SUSPENDED,
        (
            "suspended",
            "disabled",
            "deactivated",
            "inactive",
            "not active",
            "no longer active",
            "account has been locked",
            "account is locked",
            "mailbox is frozen",
            "expired account",
        ),
    ),
    (
        Reason.EXPIRED,
        (
            "retry timeout exceeded",
            "message expired",
            "delivery time expired",
            "too long in queue",
            "been in the queue too long",
            "message has been in",
            "expired",
        ),
    ),
    (
        Reason.REJECTED,
        (
            "spam",
            "blocked",
            "block list",
            "blocklist",
            "blacklist",
            "denylist",
            "spamhaus",
            "rbl",
            "dnsbl",
            "policy",
            "denied",
            "not permitted",
            "not allowed",
            "not authorized",
            "unauthorized",
            "authentication",
            "dmarc",
            "spf",
            "dkim",
            "reputation",
            "virus",
            "malware",
            "unsolicited",
            "relay access",
            "relaying",
            "content rejected",
            "message rejected",
            "rejected due to",
            "refused to talk",
            "banned",
        ),
    ),
    (
        Reason.NETWORK,
        (
            "connection refused",
            "connection timed out",
            "connection reset",
            "lost connection",
            "timed out",
            "timeout",
            "network is unreachable",
            "no route to host",
            "broken pipe",
            "connect to",
            "unable to connect",
            "could not connect",
            "cannot connect",
            "tls",
            "ssl",
            "handshake",
            "temporarily unavailable",
        ),
    ),
)

_CODE_REASON: dict[int, Reason] = {
    421: Reason.NETWORK,
    551: Reason.USER_UNKNOWN,
    553: Reason.USER_UNKNOWN,
    552: Reason.MAILBOX_FULL,  # RFC 5321: "exceeded storage allocation"
}

_FINAL_WORDS = ("retry timeout exceeded", "giving up", "returned to sender", "permanent")
_TEMPORARY_WORDS = ("try again", "temporar", "deferred", "later", "retry")
_PERMANENT_BY_REASON = frozenset(
    {
        Reason.USER_UNKNOWN,
        Reason.HOST_UNKNOWN,
        Reason.SUSPENDED,
        Reason.MESSAGE_TOO_BIG,
        Reason.REJECTED,
        Reason.EXPIRED,
    }
)

# An enhanced status code: class.subject.detail, not part of a longer dotted number.
_STATUS_RE = re.compile(r"(?<![\w.])([245])\.([0-7])\.(\d{1,3})(?![\w.])")
# A basic code directly followed by an enhanced code ("552 5.2.2", "552-5.2.2", "#550 5.1.1").
_CODE_STATUS_RE = re.compile(r"(?<![\w.:\-])([245][0-5]\d)[ \-]([245]\.[0-7]\.\d{1,3})(?![\w.])")
# A basic code alone, followed by a space, a hyphen or the end.
_CODE_RE = re.compile(r"(?<![\w.:\-\[/])([245][0-5]\d)(?=[ \-]|$)")


def extract_status(text: str) -> str | None:
    """The first enhanced status code in ``text`` ("5.2.2"), preferring one after a basic code."""
    if not text:
        return None
    m = _CODE_STATUS_RE.search(text)
    if m:
        return m.group(2)
    m = _STATUS_RE.search(text)
    if m:
        return f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
    return None


def extract_code(text: str) -> int | None:
    """The first basic SMTP reply code in ``text`` (552), or None."""
    if not text:
        return None
    m = _CODE_STATUS_RE.search(text)
    if m:
        return int(m.group(1))
    m = _CODE_RE.search(text)
    if m:
        return int(m.group(1))
    return None


def _text_reason(lowered: str, table: tuple[tuple[Reason, tuple[str, ...]], ...]) -> Reason | None:
    for reason, phrases in table:
        for phrase in phrases:
            if phrase in lowered:
                return reason
    return None


def _normalise_status(status: str | None) -> str | None:
    if not status:
        return None
    status = status.strip()
    m = _STATUS_RE.fullmatch(status)
    if not m:
        return None
    return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"


def classify(
    text: str = "",
    *,
    code: int | None = None,
    status: str | None = None,
    context: str | None = None,
) -> Verdict:
    """Classify a failure from its diagnostic text, basic code, enhanced status and context.

    ``context`` names where the text came from, e.g. ``"postfix/local"`` or ``"exim"``; Postfix's
    local delivery agent reports "File too large" (mailbox_size_limit) with 5.2.2.
    Never raises.  Results are cached: MTAs repeat the same diagnostics many times.
    """
    text = text if isinstance(text, str) else str(text)
    if code is not None and (not isinstance(code, int) or not 200 <= code <= 599):
        code = None
    if status is not None and not isinstance(status, str):
        status = None
    if context is not None and not isinstance(context, str):
        context = None
    return _classify(text, code, status, context)


@lru_cache(maxsize=8192)
def _classify(text: str, code: int | None, status: str | None, context: str | None) -> Verdict:
    status = _normalise_status(status) or extract_status(text)
    if code is None:
        code = extract_code(text)
    lowered = text.lower()

    reason = _text_reason(lowered, _STRONG_PHRASES)
    if reason is None and status is not None:
        subject_detail = status.split(".", 1)[1]
        reason = _STATUS_REASON.get(subject_detail)
        if (
            reason is Reason.MAILBOX_FULL
            and context is not None
            and context.endswith(("/local", "/virtual"))
            and "quota" not in lowered
            and "full" not in lowered
        ):
            # Postfix local/virtual use 5.2.2 for mailbox_size_limit / file-size errors.
            reason = _text_reason(lowered, _PHRASES) or Reason.OTHER
    if reason is None:
        reason = _text_reason(lowered, _PHRASES)
    if reason is None and code is not None:
        reason = _CODE_REASON.get(code)
    if reason is None:
        reason = Reason.OTHER

    if status is not None and status[0] in "45":
        permanent = status[0] == "5"
    elif code is not None and code >= 400:
        permanent = code >= 500
    elif reason is Reason.EXPIRED or any(word in lowered for word in _FINAL_WORDS):
        permanent = True
    elif any(word in lowered for word in _TEMPORARY_WORDS):
        permanent = False
    else:
        permanent = reason in _PERMANENT_BY_REASON
    return Verdict(reason=reason, permanent=permanent, status=status, code=code)


def classify_smtp_reply(code: int, message: str) -> Verdict:
    """Classify an SMTP reply as the delivery worker sees it.

    ``message`` may start with the code itself and may be a multi-line reply flattened on one
    line ("552-5.2.2 first line 552 5.2.2 second line"); the enhanced code is parsed out of it.
    """
    message = message if isinstance(message, str) else str(message)
    status = extract_status(message)
    return classify(message, code=code, status=status)
