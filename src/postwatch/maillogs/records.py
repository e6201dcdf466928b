"""Record types the mail-log and access-log parsers emit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from postwatch.reasons import Verdict


class RecordKind(StrEnum):
    """What a parsed mail-log line says."""

    ARRIVAL = "arrival"  # postfix qmgr from=... (queue active); exim "<="
    DELIVERY = "delivery"  # one recipient: postfix to=... status=; exim => -> *> == **
    EXPIRED = "expired"  # postfix qmgr "status=expired, returned to sender"
    REMOVED = "removed"  # postfix qmgr "removed"; exim "Completed"
    REJECT = "reject"  # postfix NOQUEUE/QID reject:, milter-reject; exim "rejected RCPT"
    NOTIFICATION = "notification"  # postfix bounce: "sender non-delivery notification: QID2"
    QUOTA = "quota"  # dovecot: save failed ... Quota exceeded / quota-status
    MESSAGE_ID = "message_id"  # postfix cleanup: "QID: message-id=<...>"


class DeliveryStatus(StrEnum):
    """Normalised outcome of one delivery attempt."""

    SENT = "sent"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    EXPIRED = "expired"


@dataclass(slots=True)
class MailLogRecord:
    """One meaningful mail-log line.

    ``status`` is the MTA's own word (``sent``, ``deferred``, ``bounced``, ``expired``,
    ``undeliverable``...); ``delivery`` is the normalised :class:`DeliveryStatus` when the line is
    a delivery attempt.  ``recipient`` is the address the MTA delivered to, ``orig_to`` the
    original envelope recipient when the MTA logs it (postfix ``orig_to=``, exim ``<...>``).
    """

    time: datetime
    mta: str  # "postfix" | "exim" | "dovecot"
    kind: RecordKind
    raw: str
    program: str = ""  # "postfix/smtp", "exim", "dovecot/lmtp"
    host: str | None = None
    queue_id: str | None = None
    sender: str | None = None
    recipient: str | None = None
    orig_to: str | None = None
    relay: str | None = None
    dsn: str | None = None
    status: str | None = None
    delivery: DeliveryStatus | None = None
    reply: str | None = None
    verdict: Verdict | None = None
    message_id: str | None = None
    related_id: str | None = None  # postfix bounce: the notification's queue id; exim R=
    recipients: tuple[str, ...] = ()  # exim "<= ... for a b c"

    @property
    def envelope_recipient(self) -> str | None:
        """The recipient as the sender addressed it (orig_to when known)."""
        return self.orig_to or self.recipient


@dataclass(slots=True)
class AccessRecord:
    """One access-log request."""

    time: datetime
    client: str
    method: str
    path: str  # without the query string
    query: str
    status: int
    raw: str
    vhost: str | None = None
    size: int | None = None
    referer: str | None = None
    user_agent: str | None = None
    protocol: str | None = None
