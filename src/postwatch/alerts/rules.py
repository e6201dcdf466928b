"""Rules: which event opens, grows or ends which alert.

An alert's fingerprint is ``account/concern/subject/rule`` (e.g.
``gym/mailbox/info@gym.example/mailbox_full``). A ``fire`` signal opens the alert or, when it is
already open, is grouped into it (count + 1, newest facts). A ``resolve`` signal ends it.

Severities: ``critical`` (sent at once, also in quiet hours), ``warning`` (sent, but waits for
the end of a contact's quiet hours), ``low`` (only in the daily/weekly digest).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from postwatch.config import Config

SEVERITIES = ("low", "warning", "critical")
#: states of an alert that is not over
OPEN = ("firing", "acknowledged")
RANK = {s: i for i, s in enumerate(SEVERITIES)}

#: an open alert of the key's rule silences the notifications of these rules on the same subject
INHIBITS: dict[str, set[str]] = {
    "mailbox_full": {"quota", "forecast", "delivery"},
    "quota": {"forecast"},
}
#: rules without a recovery event: they resolve after ``alerts.resolve_after`` without news
AUTO_RESOLVE = {"delivery", "lead_lost", "source", "probe"}


@dataclass
class Signal:
    action: Literal["fire", "resolve"]
    account: str
    concern: str
    subject: str
    rules: tuple[str, ...]
    severity: str = "warning"
    data: dict[str, Any] = field(default_factory=dict)
    #: how much this event adds to the alert's count (an episode start that comes with its
    #: own ``delivery_failed`` line adds nothing, so 200 lines count 200)
    weight: int = 1

    @property
    def rule(self) -> str:
        return self.rules[0]


def fingerprint(account: str, concern: str, subject: str, rule: str) -> str:
    return f"{account}/{concern}/{subject}/{rule}"


@dataclass
class EventView:
    """The parts of an event the rules read (independent of the ORM row)."""

    id: int
    kind: str
    at: datetime
    account: str | None
    mailbox: str | None
    form: str | None
    data: dict[str, Any]


def mailbox_account(config: Config, mailbox: str) -> str | None:
    """The account id of a watched mailbox (the config's own index, not a scan)."""
    return config.watched_mailboxes().get(mailbox.lower())


def _account(config: Config, ev: EventView, mailbox: str | None) -> str | None:
    if ev.account:
        return ev.account
    if mailbox:
        return mailbox_account(config, mailbox)
    return None


def _facts(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: data[k] for k in keys if k in data and data[k] is not None}


_FAIL_KEYS = (
    "reason", "status", "evidence", "diagnostic", "source", "permanent", "code", "reply",
    "queue_id",
)


def _delivery_problem(config: Config, ev: EventView, mailbox: str | None) -> list[Signal]:
    if not mailbox:
        return []
    mailbox = mailbox.lower()
    acc = _account(config, ev, mailbox)
    if acc is None:
        return []
    facts = _facts(ev.data, *_FAIL_KEYS)
    if ev.data.get("reason") == "mailbox_full":
        return [Signal("fire", acc, "mailbox", mailbox, ("mailbox_full",), "critical", facts)]
    permanent = bool(ev.data.get("permanent"))
    # a temporary failure (deferred) is worth a message only when it keeps happening: it
    # starts low and becomes a warning after alerts.deferrals_before_warning (engine)
    sev = "critical" if permanent else "low"
    return [Signal("fire", acc, "mailbox", mailbox, ("delivery",), sev, facts)]


def on_mailbox_full(config: Config, ev: EventView) -> list[Signal]:
    box = (ev.mailbox or ev.data.get("mailbox") or "").lower()
    acc = _account(config, ev, box)
    if not box or acc is None:
        return []
    facts = _facts(ev.data, *_FAIL_KEYS)
    return [Signal("fire", acc, "mailbox", box, ("mailbox_full",), "critical", facts, weight=0)]


def on_mailbox_recovered(config: Config, ev: EventView) -> list[Signal]:
    box = (ev.mailbox or ev.data.get("mailbox") or "").lower()
    acc = _account(config, ev, box)
    if not box or acc is None:
        return []
    facts = _facts(ev.data, "evidence", "failures", "since")
    return [Signal("resolve", acc, "mailbox", box, ("mailbox_full", "delivery"), data=facts)]


def on_delivery_failed(config: Config, ev: EventView) -> list[Signal]:
    return _delivery_problem(config, ev, ev.mailbox or ev.data.get("mailbox"))


def on_delivery_attempt(config: Config, ev: EventView) -> list[Signal]:
    rcpt = ev.data.get("recipient") or ev.mailbox
    if not rcpt or mailbox_account(config, str(rcpt)) is None:
        return []  # only the watched mailboxes
    result = ev.data.get("result")
    if result == "delivered":
        acc = _account(config, ev, rcpt)
        if acc is None:
            return []
        return [Signal("resolve", acc, "mailbox", str(rcpt).lower(), ("delivery",))]
    if result in ("failed", "deferred", "held"):
        return _delivery_problem(config, ev, str(rcpt))
    return []


def on_delivery_expired(config: Config, ev: EventView) -> list[Signal]:
    acc = ev.account
    if acc is None:
        return []
    subject = ev.form or str(ev.data.get("form") or "forms")
    facts = _facts(ev.data, "submission", "recipient", "reason")
    return [Signal("fire", acc, "lead_flow", subject, ("lead_lost",), "critical", facts)]


def _capacity_subject(config: Config, ev: EventView) -> tuple[str, str, str] | None:
    kind = str(ev.data.get("subject") or ("mailbox" if ev.mailbox else "site"))
    name = str(ev.data.get("name") or ev.mailbox or "")
    if not name:
        return None
    concern = "mailbox" if kind == "mailbox" else "site"
    if concern == "mailbox":
        name = name.lower()
    acc = _account(config, ev, name if concern == "mailbox" else None)
    if acc is None:
        return None
    return acc, concern, name


_QUOTA_KEYS = (
    "level", "percent", "used_bytes", "limit_bytes", "full_at", "growth_bytes_per_day", "read_at",
)


def on_quota(config: Config, ev: EventView) -> list[Signal]:
    where = _capacity_subject(config, ev)
    if where is None:
        return []
    acc, concern, name = where
    facts = _facts(ev.data, *_QUOTA_KEYS)
    facts.setdefault("read_at", ev.at.isoformat())
    if ev.kind == "quota_ok":
        # room again: the quota alert ends, and so does a full mailbox (a reading may have
        # opened it, and no delivery may come soon to close it: no reminder of a fixed box)
        rules = ("quota", "forecast", "mailbox_full") if concern == "mailbox" else (
            "quota", "forecast")
        return [Signal("resolve", acc, concern, name, rules, data=facts)]
    percent = _number(ev.data.get("percent"))
    level = _number(ev.data.get("level")) or 0.0
    if ev.kind == "quota_full":
        if percent is None or percent < level:
            # capacity's echo of a mailbox_full delivery event: the figure it carries is an
            # older reading, not the cause. The mailbox_full alert is the alert of this
            # incident; a second, critical one with a meaningless percentage is noise.
            return []
        if concern == "mailbox":
            # a full mailbox is one incident, whether a quota reading or a refused delivery
            # saw it first: the same alert as mailbox_full (which then only adds its facts)
            return [Signal("fire", acc, concern, name, ("mailbox_full",), "critical", facts,
                           weight=0)]
        sev = "critical"
    else:
        sev = "warning" if level >= 90 else "low"
    return [Signal("fire", acc, concern, name, ("quota",), sev, facts)]


def _number(v: Any) -> float | None:
    """A figure of an event (None when absent); a malformed one raises ValueError (the event
    is then passed over and logged, like any event a rule cannot read)."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError(f"not a number: {v!r}")
    return float(v)


def on_forecast(config: Config, ev: EventView) -> list[Signal]:
    where = _capacity_subject(config, ev)
    if where is None:
        return []
    acc, concern, name = where
    facts = _facts(ev.data, *_QUOTA_KEYS)
    sev = "low"
    full_at = ev.data.get("full_at")
    if isinstance(full_at, str):
        try:
            when = datetime.fromisoformat(full_at)
            if when.tzinfo is not None and (when - ev.at).total_seconds() < 86400:
                sev = "warning"  # full within a day: not something for tomorrow's digest
        except ValueError:
            pass
    return [Signal("fire", acc, concern, name, ("forecast",), sev, facts)]


def on_quota_source_failed(config: Config, ev: EventView) -> list[Signal]:
    box = str(ev.data.get("mailbox") or ev.mailbox or ev.data.get("source") or "")
    acc = _account(config, ev, box if "@" in box else None)
    if not box or acc is None:
        return []
    facts = _facts(ev.data, "source", "error")
    return [Signal("fire", acc, "monitoring", box.lower(), ("source",), "warning", facts)]


#: how many attempt keys and sign-ups an alert remembers to count each once
MAX_REMEMBERED = 2000
#: the key of an alert's data that remembers the attempts and sign-ups it counted (keys that
#: start with "_" are bookkeeping, not facts: left out of API answers)
DEDUPE = "_counted"


def signups(alert_data: dict[str, Any] | None) -> int:
    """How many distinct sign-ups (form submissions) an alert's events were about."""
    book = (alert_data or {}).get(DEDUPE)
    if not isinstance(book, dict):
        return 0
    try:
        return int(book.get("signup_count") or 0)
    except (TypeError, ValueError):
        return 0


def attempt_keys(ev: EventView) -> set[str]:
    """The names of the delivery attempt an event reports (empty when it names none).

    The worker's reply, the MTA's log line and the DSN of one attempt are three events about
    one attempt: they share a name, so the attempt is counted once. Keys read (defensively,
    whatever the payload's shape): ``job`` + ``attempt`` (the delivery room's attempt),
    ``queue_id`` (the MTA's queue id of the hand-over), and a DSN's ``original_message_id``,
    which the delivery room's DSN-based ``delivery_attempt`` repeats as ``message_id`` (its
    ``key`` starts with ``dsn:``)."""
    d = ev.data
    keys: set[str] = set()
    job, attempt = d.get("job", d.get("job_id")), d.get("attempt")
    if job is not None and attempt is not None and not isinstance(attempt, bool):
        keys.add(f"a:{job}:{attempt}")
    queue_id = d.get("queue_id")
    if isinstance(queue_id, str) and queue_id and queue_id.upper() != "NOQUEUE":
        keys.add(f"q:{queue_id}")
    mid = d.get("original_message_id")
    if mid is None and str(d.get("key") or "").startswith("dsn:"):
        mid = d.get("message_id")
    if isinstance(mid, str) and mid.strip("<> "):
        keys.add(f"m:{mid.strip().strip('<>').lower()}")
    return keys


def submission_of(ev: EventView) -> str | None:
    """The form submission (sign-up) an event is about, when it says."""
    sub = ev.data.get("submission", ev.data.get("submission_id"))
    return str(sub) if sub is not None and not isinstance(sub, bool) else None


RuleFn = Callable[[Config, EventView], list[Signal]]

#: event kind -> rule; add a kind here to make it alert (docs/alerts.md)
RULES: dict[str, RuleFn] = {
    "mailbox_full": on_mailbox_full,
    "mailbox_recovered": on_mailbox_recovered,
    "delivery_failed": on_delivery_failed,
    "delivery_attempt": on_delivery_attempt,
    "delivery_expired": on_delivery_expired,
    "quota_warning": on_quota,
    "quota_full": on_quota,
    "quota_ok": on_quota,
    "forecast_full": on_forecast,
    "quota_source_failed": on_quota_source_failed,
}


def signals(config: Config, ev: EventView) -> list[Signal]:
    fn = RULES.get(ev.kind)
    return fn(config, ev) if fn is not None else []
