"""postwatch's own Message-IDs: made once per submission and recipient, recognised cheaply.

Format: ``<SUBMISSION.HASH12@domain>``, where ``HASH12`` is the first 12 hex digits of the
SHA-256 of the lower-cased recipient and ``domain`` the ``[smtp] sender``'s domain. A resend of
the same job carries the same Message-ID, so mail clients and the recipient can recognise the
duplicate; a log line or a DSN naming it leads back to its job without a store lookup per line.
"""

from __future__ import annotations

import hashlib
import re

from postwatch.config import Config

_OWN_LOCAL = re.compile(r"^[A-Za-z0-9_-]{6,64}\.[0-9a-f]{12}$")
_QUEUED_AS = re.compile(r"queued as ([0-9A-Za-z]+)")


def message_id(submission_id: str, recipient: str, sender: str) -> str:
    """A stable Message-ID per submission and recipient: a resend is recognisably the same mail."""
    domain = sender.rpartition("@")[2] or "postwatch.invalid"
    tag = hashlib.sha256(recipient.lower().encode()).hexdigest()[:12]
    return f"<{submission_id}.{tag}@{domain}>"


def own_domain(config: Config) -> str:
    """The domain of postwatch's Message-IDs (the ``[smtp] sender``'s domain)."""
    return (config.smtp.sender.rpartition("@")[2] or "postwatch.invalid").lower()


def normalise_message_id(value: str) -> str:
    mid = value.strip()
    return mid if mid.startswith("<") else f"<{mid}>"


def own_submission(value: str | None, domain: str) -> str | None:
    """The submission id if ``value`` has the shape of postwatch's own Message-IDs
    (``<SUBMISSION.HASH12@domain>``), else None. No database access: cheap for every line."""
    if not value:
        return None
    mid = value.strip().strip("<>")
    local, at, dom = mid.rpartition("@")
    if not at or dom.lower() != domain or not _OWN_LOCAL.match(local):
        return None
    return local.rsplit(".", 1)[0]


def queued_as(reply: str | None) -> str | None:
    """The relay's queue id in its 250 reply (``250 2.0.0 Ok: queued as 4Fx...``), if any."""
    m = _QUEUED_AS.search(reply or "")
    return m.group(1) if m else None
