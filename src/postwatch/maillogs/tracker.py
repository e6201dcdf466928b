"""Per-message state: queue id -> sender, recipients, attempts, outcome.

Feed :class:`~postwatch.maillogs.records.MailLogRecord` objects in log order to
:meth:`MessageTracker.feed`; it returns what became known with that line:

* a :class:`RecipientOutcome` for every delivery attempt (``delivered``, ``deferred``,
  ``bounced``, ``expired``) and every RCPT-time rejection (``rejected``, no queue id), with the
  :class:`~postwatch.reasons.Verdict`, the raw evidence line and the message's ``Message-ID``
  when the MTA logged it (Postfix cleanup ``message-id=``, Exim ``id=``);
* a :class:`MessageSummary` when a message is finished (Postfix ``removed``, Exim
  ``Completed``), when its queue id is reused for a new message, when it has been open longer
  than ``max_lifetime`` (the MTA's own maximal queue lifetime plus a margin), or at
  :meth:`MessageTracker.finish`.

Expiry (Postfix ``status=expired, returned to sender``, Exim ``retry timeout exceeded``) fails
every recipient still pending; the reason is that recipient's last deferral's reason.

Memory is bounded: only open messages are kept, at most ``max_open`` of them (past that, the
message first seen longest ago is closed as ``evicted``, one per new message: O(1) per line),
and every ``sweep_every`` lines the open ids whose last line is older than ``max_lifetime`` are
swept (O(open) every ``sweep_every`` lines, so O(1) per line on average).  A flood of unique
queue ids therefore costs the same per line as ordinary traffic (issue 11).  Queue ids are
reused by the MTA over time; a message is keyed by its id *and* the time it was first seen.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from postwatch.maillogs.records import DeliveryStatus, MailLogRecord, RecordKind
from postwatch.reasons import Reason, Verdict

__all__ = ["MessageSummary", "MessageTracker", "RecipientOutcome", "RecipientState"]

DELIVERED = "delivered"
DEFERRED = "deferred"
BOUNCED = "bounced"
EXPIRED = "expired"
REJECTED = "rejected"
PENDING = "pending"

_OUTCOME = {
    DeliveryStatus.SENT: DELIVERED,
    DeliveryStatus.DEFERRED: DEFERRED,
    DeliveryStatus.BOUNCED: BOUNCED,
    DeliveryStatus.EXPIRED: EXPIRED,
}


@dataclass(slots=True)
class RecipientOutcome:
    """One delivery attempt's result for one recipient (or an RCPT-time rejection)."""

    time: datetime
    mta: str
    outcome: str  # delivered | deferred | bounced | expired | rejected
    recipient: str  # the envelope recipient (orig_to when logged)
    queue_id: str | None
    message_key: str | None
    arrived: datetime | None
    sender: str | None
    delivered_to: str | None
    verdict: Verdict | None
    dsn: str | None
    relay: str | None
    reply: str | None
    evidence: str  # the raw log line
    message_id: str | None = None  # the message's Message-ID when the MTA logged it


@dataclass(slots=True)
class RecipientState:
    """What is known about one recipient of an open or finished message."""

    outcome: str = PENDING  # pending | deferred | delivered | bounced | expired
    attempts: int = 0
    first_time: datetime | None = None
    last_time: datetime | None = None
    verdict: Verdict | None = None  # of the last failure or deferral
    evidence: str | None = None
    delivered_to: str | None = None

    @property
    def final(self) -> str:
        """delivered / bounced / expired, or pending when it never ended."""
        return PENDING if self.outcome in (PENDING, DEFERRED) else self.outcome


@dataclass(slots=True)
class MessageSummary:
    """A message the tracker no longer keeps open."""

    key: str
    mta: str
    queue_id: str
    sender: str | None
    first_seen: datetime
    arrived: datetime | None
    last_seen: datetime
    recipients: dict[str, RecipientState]
    closed: str  # removed | reused | evicted | end_of_logs
    expired: bool = False
    message_id: str | None = None


@dataclass(slots=True)
class _Open:
    key: str
    mta: str
    queue_id: str
    first_seen: datetime
    last_seen: datetime
    sender: str | None = None
    arrived: datetime | None = None
    delivering: bool = False
    expired: bool = False
    message_id: str | None = None
    recipients: dict[str, RecipientState] = field(default_factory=dict)


_NONE: tuple[()] = ()
_REJECT = RecordKind.REJECT
_QUOTA = RecordKind.QUOTA
_DELIVERY = RecordKind.DELIVERY
_ARRIVAL = RecordKind.ARRIVAL
_EXPIRED_KIND = RecordKind.EXPIRED
_REMOVED = RecordKind.REMOVED
_NOTIFICATION = RecordKind.NOTIFICATION
_MESSAGE_ID = RecordKind.MESSAGE_ID


class MessageTracker:
    """Follows messages through an MTA log; see the module docstring."""

    def __init__(
        self,
        *,
        max_lifetime: timedelta = timedelta(days=6),
        max_open: int = 200_000,
        sweep_every: int = 50_000,
    ) -> None:
        self.max_lifetime = max_lifetime
        self.max_open = max_open
        self.sweep_every = sweep_every
        # in the order first seen: the oldest is evicted first, in O(1)
        self._open: OrderedDict[tuple[str, str], _Open] = OrderedDict()
        self._fed = 0
        self.evicted = 0

    @property
    def open_count(self) -> int:
        return len(self._open)

    def feed(self, record: MailLogRecord) -> Sequence[RecipientOutcome | MessageSummary]:
        """Take one record; return what it decided (often nothing)."""
        self._fed += 1
        out: list[RecipientOutcome | MessageSummary] | None = None
        if self._fed % self.sweep_every == 0:
            out = self._sweep(record.time)
        if len(self._open) >= self.max_open:
            out = out or []
            self._evict_oldest(out)
        kind = record.kind
        if kind is _REJECT:
            res = self._reject(record)
            if out:
                out.append(res)
                return out
            return (res,)
        qid = record.queue_id
        if qid is None or kind is _QUOTA:
            return out or _NONE
        key = (record.mta, qid)
        msg = self._open.get(key)
        if msg is not None and record.time - msg.first_seen > self.max_lifetime:
            out = out or []
            out.append(self._close(key, msg, "evicted"))
            msg = None
        if kind is _DELIVERY:
            if msg is None:
                msg = self._new(key, record)
            msg.last_seen = record.time
            res2 = self._delivery(msg, record)
            if out:
                out.append(res2)
                return out
            return (res2,)
        if (
            msg is not None
            and (kind is _ARRIVAL or kind is _MESSAGE_ID)
            and msg.delivering
            and (record.mta == "exim" or _finished(msg))
        ):
            # the id was reused: the old message ended without a "removed" line
            out = out or []
            out.append(self._close(key, msg, "reused"))
            msg = None
        if msg is None:
            if kind is _REMOVED or kind is _NOTIFICATION:
                return out or _NONE
            msg = self._new(key, record)
        msg.last_seen = record.time
        if kind is _ARRIVAL:
            if record.sender is not None and msg.sender is None:
                msg.sender = record.sender
            if msg.arrived is None:
                msg.arrived = record.time
            for rcpt in record.recipients:
                msg.recipients.setdefault(rcpt, RecipientState(first_time=record.time))
            if record.message_id:
                msg.message_id = record.message_id
        elif kind is _MESSAGE_ID:
            msg.message_id = record.message_id
        elif kind is _EXPIRED_KIND:
            if record.sender is not None and msg.sender is None:
                msg.sender = record.sender
            expired = self._expire(msg, record)
            if expired:
                out = out or []
                out.extend(expired)
        elif kind is _REMOVED:
            out = out or []
            out.append(self._close(key, msg, "removed"))
        return out or _NONE

    def finish(self) -> list[MessageSummary]:
        """Close every open message (end of the logs): recipients not finished are pending."""
        result = [self._summary(m, "end_of_logs") for m in self._open.values()]
        self._open.clear()
        return result

    # --- internals ---------------------------------------------------------------------------
    def _new(self, key: tuple[str, str], record: MailLogRecord) -> _Open:
        msg = _Open(
            key=f"{record.mta}:{record.queue_id}:{record.time.isoformat()}",
            mta=record.mta,
            queue_id=key[1],
            first_seen=record.time,
            last_seen=record.time,
        )
        self._open[key] = msg
        return msg

    def _close(self, key: tuple[str, str], msg: _Open, why: str) -> MessageSummary:
        self._open.pop(key, None)
        return self._summary(msg, why)

    @staticmethod
    def _summary(msg: _Open, why: str) -> MessageSummary:
        return MessageSummary(
            key=msg.key,
            mta=msg.mta,
            queue_id=msg.queue_id,
            sender=msg.sender,
            first_seen=msg.first_seen,
            arrived=msg.arrived or msg.first_seen,
            last_seen=msg.last_seen,
            recipients=msg.recipients,
            closed=why,
            expired=msg.expired,
            message_id=msg.message_id,
        )

    def _sweep(self, now: datetime) -> list[RecipientOutcome | MessageSummary]:
        """Close the open messages whose last line is older than ``max_lifetime``."""
        out: list[RecipientOutcome | MessageSummary] = []
        limit = now - self.max_lifetime
        stale = [k for k, m in self._open.items() if m.last_seen < limit]
        for k in stale:
            out.append(self._close(k, self._open[k], "evicted"))
            self.evicted += 1
        return out

    def _evict_oldest(self, out: list[RecipientOutcome | MessageSummary]) -> None:
        """Make room for one more message: close the ones first seen longest ago (O(1) each)."""
        open_ = self._open
        while open_ and len(open_) >= self.max_open:
            _key, msg = open_.popitem(last=False)
            out.append(self._summary(msg, "evicted"))
            self.evicted += 1

    def _outcome(
        self,
        msg: _Open | None,
        record: MailLogRecord,
        outcome: str,
        verdict: Verdict | None,
        recipient: str,
    ) -> RecipientOutcome:
        if msg is None:
            return RecipientOutcome(
                record.time,
                record.mta,
                outcome,
                recipient,
                record.queue_id,
                None,
                None,
                record.sender,
                record.recipient,
                verdict,
                record.dsn,
                record.relay,
                record.reply,
                record.raw,
            )
        return RecipientOutcome(
            record.time,
            record.mta,
            outcome,
            recipient,
            record.queue_id,
            msg.key,
            msg.arrived or msg.first_seen,
            msg.sender,
            record.recipient,
            verdict,
            record.dsn,
            record.relay,
            record.reply,
            record.raw,
            msg.message_id,
        )

    def _delivery(self, msg: _Open, record: MailLogRecord) -> RecipientOutcome:
        msg.delivering = True
        rcpt_addr = record.orig_to or record.recipient or ""
        state = msg.recipients.get(rcpt_addr)
        if state is None:
            state = msg.recipients[rcpt_addr] = RecipientState(first_time=record.time)
        state.attempts += 1
        state.last_time = record.time
        state.evidence = record.raw
        delivery = record.delivery
        outcome = _OUTCOME.get(delivery, DEFERRED) if delivery is not None else DEFERRED
        verdict = record.verdict
        if outcome == DELIVERED:
            state.delivered_to = record.recipient
            if state.outcome != DELIVERED:
                state.outcome = DELIVERED
        elif outcome == EXPIRED:
            verdict = _expired_verdict(state.verdict, verdict)
            state.outcome = EXPIRED
            state.verdict = verdict
            msg.expired = True
        else:
            if state.outcome != DELIVERED:
                state.outcome = outcome
            state.verdict = verdict
        return self._outcome(msg, record, outcome, verdict, rcpt_addr)

    def _expire(self, msg: _Open, record: MailLogRecord) -> list[RecipientOutcome]:
        msg.expired = True
        out: list[RecipientOutcome] = []
        for addr, state in msg.recipients.items():
            if state.outcome in (PENDING, DEFERRED):
                verdict = _expired_verdict(state.verdict, None)
                state.outcome = EXPIRED
                state.verdict = verdict
                state.last_time = record.time
                state.evidence = record.raw
                res = self._outcome(msg, record, EXPIRED, verdict, addr)
                res.delivered_to = addr
                out.append(res)
        return out

    def _reject(self, record: MailLogRecord) -> RecipientOutcome:
        return self._outcome(None, record, REJECTED, record.verdict, record.recipient or "")


def _finished(msg: _Open) -> bool:
    """Every known recipient has a final outcome."""
    for state in msg.recipients.values():
        if state.outcome == PENDING or state.outcome == DEFERRED:
            return False
    return True


def _expired_verdict(last: Verdict | None, own: Verdict | None) -> Verdict:
    """Failed for good: the reason of the last deferral when known."""
    if last is not None and last.reason is not Reason.OTHER:
        return replace(last, permanent=True)
    if own is not None and own.reason is not Reason.OTHER:
        return replace(own, permanent=True)
    return Verdict(reason=Reason.EXPIRED, permanent=True, status=None, code=None)
