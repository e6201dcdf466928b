"""Messages a person acts on, in English and Dutch.

Each message says what is wrong, for which account and address, since when, what it costs
(sign-ups held and where they went instead), what to do, and how to acknowledge. Titles become
e-mail subjects: control characters are removed so nothing from a log line can add a header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

T: dict[str, dict[str, str]] = {
    "en": {
        "critical": "CRITICAL",
        "warning": "WARNING",
        "low": "NOTE",
        "fired": "",
        "reminder": "Reminder: ",
        "escalated": "Escalated: ",
        "resolved": "Resolved: ",
        "what": "What is wrong",
        "what_was": "What was wrong",
        "account": "Account",
        "address": "Address",
        "since": "Since",
        "count": "{n} failed deliveries counted",
        "count_one": "1 failed delivery counted",
        "count_signups": "{k} sign-ups affected ({n} failed delivery attempts, each counted once)",
        "count_signups1": "1 sign-up affected ({n} failed delivery attempts, each counted once)",
        "count1": "seen {n} times",
        "cost": "What it costs",
        "cost_text": (
            "{n} website sign-ups could not be delivered since {since}; "
            "they are kept and were sent to {fallback}."
        ),
        "cost_nofb": (
            "{n} website sign-ups could not be delivered since {since}; they are kept and "
            "will be delivered when the mailbox takes mail again."
        ),
        "cost_text1": (
            "1 website sign-up could not be delivered since {since}; "
            "it is kept and was sent to {fallback}."
        ),
        "cost_nofb1": (
            "1 website sign-up could not be delivered since {since}; it is kept and "
            "will be delivered when the mailbox takes mail again."
        ),
        "cost_done": (
            "{n} website sign-ups could not be delivered from {since}; they were kept and "
            "sent to {fallback}, and {d} of them are now delivered to {subject}."
        ),
        "cost_done_nofb": (
            "{n} website sign-ups could not be delivered from {since}; they were kept, and "
            "{d} of them are now delivered to {subject}."
        ),
        "todo": "What to do",
        "evidence": "Evidence",
        "escalated_note": (
            "Nobody acknowledged this alert within {after}; you are next in line ({role})."
        ),
        "ack": "Acknowledge (stops reminders and escalation)",
        "ack_cli": "Acknowledge with: postwatch alerts ack {id}",
        "valid": "link valid until {until}",
        "resolved_note": "This is over since {at}. Nothing more to do.",
        "acked_by": "Acknowledged by {by} at {at}.",
        "alert": "Alert",
        # rules ---------------------------------------------------------------------------
        "mailbox_full.title": "mailbox {subject} is full",
        "mailbox_full.what": "The mailbox {subject} is full: its mail server refuses new mail.",
        "mailbox_full.todo": (
            "Delete or archive old mail in {subject} (or raise its quota); postwatch sees "
            "the next delivery succeed and closes this alert."
        ),
        "delivery.title": "mail to {subject} is not delivered",
        "delivery.what": "Mail to {subject} is not delivered ({reason}).",
        "delivery.todo": (
            "Check that {subject} exists and that its mail server accepts mail; the line the "
            "mail server wrote is below."
        ),
        "quota.title": "{subject} is at {percent} of its space",
        "quota.what": (
            "{subject} uses {percent} of its space ({used} of {limit}, measured {read_at})."
        ),
        "quota.todo.mailbox": "Clean up {subject} before it is full, or raise its quota.",
        "quota.todo.site": (
            "Remove old backups, caches and unused plugins from the site, or enlarge the "
            "hosting package."
        ),
        "forecast.title": "{subject} will be full around {full_at}",
        "forecast.what": "At the current growth {subject} will be full around {full_at}.",
        "forecast.todo": "Make room or raise the limit before then.",
        "lead_lost.title": "form sign-ups of {subject} could not be delivered",
        "lead_lost.what": (
            "Sign-ups from the form {subject} could not be delivered before the retry "
            "deadline ({reason})."
        ),
        "lead_lost.todo": (
            "The sign-ups are stored in postwatch: read them there, fix the recipient address "
            "and contact the people."
        ),
        "source.title": "quota of {subject} cannot be read",
        "source.what": "postwatch cannot read the quota of {subject}: {error}",
        "source.todo": "Check the quota source's address and credentials in the config.",
        "digest.title": "{n} things to look at soon ({account})",
        "digest.intro": "Not urgent yet, most urgent first:",
        "digest.full_in": "full around {full_at}",
        "digest.footer": "You get this digest {when} instead of one message per item.",
    },
    "nl": {
        "critical": "KRITIEK",
        "warning": "WAARSCHUWING",
        "low": "MELDING",
        "fired": "",
        "reminder": "Herinnering: ",
        "escalated": "Geëscaleerd: ",
        "resolved": "Opgelost: ",
        "what": "Wat is er mis",
        "what_was": "Wat was er mis",
        "account": "Account",
        "address": "Adres",
        "since": "Sinds",
        "count": "{n} mislukte bezorgingen geteld",
        "count_one": "1 mislukte bezorging geteld",
        "count_signups": (
            "{k} aanmeldingen getroffen ({n} mislukte bezorgpogingen, elk één keer geteld)"
        ),
        "count_signups1": (
            "1 aanmelding getroffen ({n} mislukte bezorgpogingen, elk één keer geteld)"
        ),
        "count1": "{n} keer gezien",
        "cost": "Wat het kost",
        "cost_text": (
            "{n} aanmeldingen via de website konden sinds {since} niet worden bezorgd; "
            "ze zijn bewaard en doorgestuurd naar {fallback}."
        ),
        "cost_nofb": (
            "{n} aanmeldingen via de website konden sinds {since} niet worden bezorgd; ze zijn "
            "bewaard en worden bezorgd zodra de mailbox weer mail aanneemt."
        ),
        "cost_text1": (
            "1 aanmelding via de website kon sinds {since} niet worden bezorgd; "
            "hij is bewaard en doorgestuurd naar {fallback}."
        ),
        "cost_nofb1": (
            "1 aanmelding via de website kon sinds {since} niet worden bezorgd; hij is "
            "bewaard en wordt bezorgd zodra de mailbox weer mail aanneemt."
        ),
        "cost_done": (
            "{n} aanmeldingen via de website konden vanaf {since} niet worden bezorgd; ze zijn "
            "bewaard en doorgestuurd naar {fallback}, en {d} ervan zijn nu bezorgd bij {subject}."
        ),
        "cost_done_nofb": (
            "{n} aanmeldingen via de website konden vanaf {since} niet worden bezorgd; ze zijn "
            "bewaard, en {d} ervan zijn nu bezorgd bij {subject}."
        ),
        "todo": "Wat te doen",
        "evidence": "Bewijs",
        "escalated_note": (
            "Niemand heeft deze melding binnen {after} bevestigd; u bent de volgende ({role})."
        ),
        "ack": "Bevestigen (stopt herinneringen en escalatie)",
        "ack_cli": "Bevestigen met: postwatch alerts ack {id}",
        "valid": "link geldig tot {until}",
        "resolved_note": "Dit is voorbij sinds {at}. Er hoeft niets meer te gebeuren.",
        "acked_by": "Bevestigd door {by} om {at}.",
        "alert": "Melding",
        "mailbox_full.title": "mailbox {subject} is vol",
        "mailbox_full.what": (
            "De mailbox {subject} is vol: de mailserver weigert nieuwe mail."
        ),
        "mailbox_full.todo": (
            "Verwijder of archiveer oude mail in {subject} (of verhoog het quotum); postwatch "
            "ziet de volgende bezorging lukken en sluit deze melding."
        ),
        "delivery.title": "mail aan {subject} wordt niet bezorgd",
        "delivery.what": "Mail aan {subject} wordt niet bezorgd ({reason}).",
        "delivery.todo": (
            "Controleer of {subject} bestaat en of de mailserver mail aanneemt; de regel van "
            "de mailserver staat hieronder."
        ),
        "quota.title": "{subject} gebruikt {percent} van de ruimte",
        "quota.what": (
            "{subject} gebruikt {percent} van de ruimte ({used} van {limit}, gemeten "
            "{read_at})."
        ),
        "quota.todo.mailbox": "Ruim {subject} op voordat hij vol is, of verhoog het quotum.",
        "quota.todo.site": (
            "Verwijder oude back-ups, caches en ongebruikte plugins van de site, of vergroot "
            "het hostingpakket."
        ),
        "forecast.title": "{subject} is rond {full_at} vol",
        "forecast.what": "Bij de huidige groei is {subject} rond {full_at} vol.",
        "forecast.todo": "Maak voor die tijd ruimte of verhoog de limiet.",
        "lead_lost.title": "aanmeldingen van formulier {subject} niet bezorgd",
        "lead_lost.what": (
            "Aanmeldingen van formulier {subject} konden niet voor de deadline worden "
            "bezorgd ({reason})."
        ),
        "lead_lost.todo": (
            "De aanmeldingen staan in postwatch: lees ze daar, herstel het ontvangstadres en "
            "neem contact op met de mensen."
        ),
        "source.title": "quotum van {subject} niet leesbaar",
        "source.what": "postwatch kan het quotum van {subject} niet lezen: {error}",
        "source.todo": "Controleer adres en inloggegevens van de quotumbron in de config.",
        "digest.title": "{n} punten om binnenkort naar te kijken ({account})",
        "digest.intro": "Nog niet dringend, het dringendste eerst:",
        "digest.full_in": "vol rond {full_at}",
        "digest.footer": "U krijgt dit overzicht {when} in plaats van een bericht per punt.",
    },
}

REASONS = {
    "nl": {
        "mailbox_full": "mailbox vol",
        "user_unknown": "adres bestaat niet",
        "host_unknown": "domein onbekend",
        "rejected": "geweigerd",
        "suspended": "geblokkeerd",
        "message_too_big": "bericht te groot",
        "rate_limited": "te veel berichten",
        "expired": "te lang in de wachtrij",
        "network": "netwerkfout",
        "other": "andere fout",
    }
}


def fmt_duration(td: timedelta) -> str:
    s = int(td.total_seconds())
    if s % 86400 == 0 and s:
        return f"{s // 86400}d"
    if s % 3600 == 0 and s:
        return f"{s // 3600}h"
    if s % 60 == 0 and s:
        return f"{s // 60} min"
    return f"{s}s"


def clean_title(text: str) -> str:
    """One line, no control characters (an e-mail subject must not carry a header)."""
    return " ".join(_CTRL.sub(" ", text.replace("\r", " ").replace("\n", " ")).split())[:200]


def clean_text(text: str | None) -> str:
    """A short free text from a person or a token holder (an ack's ``by``): one line without
    control characters (no terminal escape sequence reaches an operator's screen)."""
    return clean_title(text or "").replace("\x1b", "")


def clean_body(text: str) -> str:
    return _CTRL.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))


def _size(n: Any) -> str:
    try:
        v = float(n)
    except (TypeError, ValueError):
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if v < 1024 or unit == "TB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return "?"


def local(dt: datetime | None, tz: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if dt is None:
        return "?"
    return dt.astimezone(ZoneInfo(tz)).strftime(fmt) + ("" if fmt == "%H:%M" else f" ({tz})")


def _when(dt: datetime, tz: str, now: datetime) -> str:
    """Time only when it is today in the reader's zone, else date and time."""
    z = ZoneInfo(tz)
    if dt.astimezone(z).date() == now.astimezone(z).date():
        return dt.astimezone(z).strftime("%H:%M")
    return dt.astimezone(z).strftime("%Y-%m-%d %H:%M")


@dataclass
class AlertFacts:
    """What a message is about (built by the engine from the alert row and the events)."""

    id: int
    rule: str
    concern: str
    subject: str
    account_id: str
    account_name: str | None
    severity: str
    started_at: datetime
    count: int
    data: dict[str, Any]
    fingerprint: str = ""
    resolved_at: datetime | None = None
    acked_by: str | None = None
    acked_at: datetime | None = None
    #: sign-ups held for the mailbox since the alert started, and where they went instead
    held: int = 0
    held_since: datetime | None = None
    fallback: list[str] = field(default_factory=list)
    #: distinct sign-ups (form submissions) the alert's events were about (0: unknown/none)
    signups: int = 0
    #: of the ``held`` sign-ups, how many reached the mailbox since
    delivered: int = 0
    #: a site's configured name (``[[accounts.sites]] name``)
    subject_name: str | None = None


def parse_time(value: Any) -> datetime | None:
    """An ISO time from event data (None when absent, malformed or without a zone)."""
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else None


def fmt_args(f: AlertFacts, lang: str, tz: str) -> dict[str, Any]:
    d = f.data
    percent = d.get("percent")
    reason = str(d.get("reason") or "?")
    full_at = d.get("full_at")
    full_txt = "?"
    if isinstance(full_at, str):
        try:
            full_txt = local(datetime.fromisoformat(full_at), tz)
        except ValueError:
            full_txt = full_at
    subject = f"{f.subject_name} ({f.subject})" if f.subject_name else f.subject
    return {
        "subject": subject,
        "percent": f"{float(percent):.0f}%" if isinstance(percent, int | float) else "?%",
        "used": _size(d.get("used_bytes")),
        "limit": _size(d.get("limit_bytes")),
        "reason": REASONS.get(lang, {}).get(reason, reason),
        "error": str(d.get("error") or "?"),
        "full_at": full_txt,
        "read_at": local(parse_time(d.get("read_at")), tz),
    }


def cost_text(
    f: AlertFacts, lang: str, tz: str, now: datetime, *, resolved: bool | None = None
) -> str:
    """What it costs ('' when no sign-up was held): while it lasts, the sign-ups are kept and
    were sent to the fallback; once it is over, how many of them are now delivered."""
    if not f.held:
        return ""
    t = T[lang]
    since = _when(f.held_since or f.started_at, tz, now)
    fallback = ", ".join(f.fallback)
    if resolved is None:
        resolved = f.resolved_at is not None
    if resolved:
        key = "cost_done" if f.fallback else "cost_done_nofb"
        return t[key].format(n=f.held, since=since, fallback=fallback, d=f.delivered,
                             subject=f.subject)
    key = ("cost_text" if f.fallback else "cost_nofb") + ("1" if f.held == 1 else "")
    return t[key].format(n=f.held, since=since, fallback=fallback)


def todo_text(f: AlertFacts, lang: str, tz: str) -> str:
    t = T[lang]
    key = f"{f.rule}.todo"
    if f.rule == "quota":
        key = f"quota.todo.{'mailbox' if f.concern == 'mailbox' else 'site'}"
    return t.get(key, "").format(**fmt_args(f, lang, tz))


#: subject lines of delivery status notifications: they name no cause, so they are no evidence
_DSN_SUBJECTS = re.compile(
    r"undeliver|returned to sender|delivery status notification|failure notice|"
    r"mail delivery (failed|system)|non[- ]?delivery|unzustellbar|onbestelbaar",
    re.IGNORECASE,
)


def evidence_text(data: dict[str, Any], limit: int = 400) -> str:
    """The evidence to show: the server's own words (a DSN's diagnostic, a reply, the log
    line), never just a bounce's subject line."""
    evidence = str(data.get("evidence") or "")
    diagnostic = str(data.get("diagnostic") or "")
    reply = str(data.get("reply") or "")
    status = str(data.get("status") or "")
    if diagnostic and (not evidence or _DSN_SUBJECTS.search(evidence) or len(evidence) < 80):
        text = f"{status} {diagnostic}".strip() if status not in diagnostic else diagnostic
        return text[:limit]
    if evidence and _DSN_SUBJECTS.search(evidence) and reply:
        return reply[:limit]
    return evidence[:limit]


def count_text(f: AlertFacts, lang: str) -> str:
    """How much happened: sign-ups when the alert is about form mail, else the failures (each
    attempt once) or the times seen."""
    t = T[lang]
    if f.rule in ("mailbox_full", "delivery"):
        n = f.count
        if f.signups:
            return t["count_signups1" if f.signups == 1 else "count_signups"].format(
                k=f.signups, n=max(1, n)
            )
        if n <= 0:  # opened by a quota reading: no delivery has failed (yet)
            return ""
        return t["count_one"] if n == 1 else t["count"].format(n=n)
    return t["count1"].format(n=max(1, f.count))


def title(f: AlertFacts, kind: str, lang: str, tz: str) -> str:
    t = T[lang]
    head = t.get(f"{f.rule}.title", f.rule).format(**fmt_args(f, lang, tz))
    sev = "" if kind == "resolved" else f"[{t[f.severity]}] "
    return clean_title(f"{t[kind]}{sev}{f.account_id}: {head}")


def render(
    f: AlertFacts,
    *,
    kind: str,
    lang: str,
    tz: str,
    now: datetime,
    ack_url: str | None,
    ack_until: datetime | None,
    role: str,
    escalate_after: str,
) -> tuple[str, str]:
    """(title, body) of a notification about one alert."""
    t = T[lang]
    args = fmt_args(f, lang, tz)
    lines: list[str] = []
    if kind == "resolved":
        lines.append(t["resolved_note"].format(at=local(f.resolved_at or now, tz)))
        lines.append("")
    what = t["what_was"] if kind == "resolved" else t["what"]
    lines.append(f"{what}: " + t.get(f"{f.rule}.what", f.rule).format(**args))
    acct = f"{f.account_name} ({f.account_id})" if f.account_name else f.account_id
    lines.append(f"{t['account']}: {acct}")
    lines.append(f"{t['address']}: {f.subject}")
    counted = count_text(f, lang)
    lines.append(f"{t['since']}: {local(f.started_at, tz)}" + (f"; {counted}" if counted else ""))
    cost = cost_text(f, lang, tz, now, resolved=kind == "resolved")
    if cost:
        lines.append(f"{t['cost']}: {cost}")
    if kind != "resolved":
        lines.append(f"{t['todo']}: " + todo_text(f, lang, tz))
    evidence = evidence_text(f.data)
    if evidence:
        lines.append(f"{t['evidence']}: {evidence}")
    if kind == "escalated":
        lines.append("")
        lines.append(t["escalated_note"].format(after=escalate_after, role=role))
    if f.acked_by and f.acked_at:
        lines.append(t["acked_by"].format(by=f.acked_by, at=local(f.acked_at, tz)))
    if kind != "resolved" and not f.acked_by:
        lines.append("")
        if ack_url:
            until = f" ({t['valid'].format(until=local(ack_until, tz))})" if ack_until else ""
            lines.append(f"{t['ack']}{until}:")
            lines.append(ack_url)
        else:
            lines.append(t["ack_cli"].format(id=f.id))
    lines.append("")
    lines.append(f"{t['alert']} {f.id} · {f.fingerprint}")
    return title(f, kind, lang, tz), clean_body("\n".join(lines))


@dataclass
class DigestItem:
    facts: AlertFacts
    full_at: datetime | None


def render_digest(
    items: list[DigestItem], *, lang: str, tz: str, when: str, accounts: str
) -> tuple[str, str]:
    t = T[lang]
    lines = [t["digest.intro"], ""]
    for it in items:
        f = it.facts
        head = t.get(f"{f.rule}.title", f.rule).format(**fmt_args(f, lang, tz))
        extra = ""
        if it.full_at is not None and f.rule != "forecast":
            extra = " · " + t["digest.full_in"].format(full_at=local(it.full_at, tz))
        lines.append(f"- {f.account_id}: {head}{extra} ({t['since'].lower()} "
                     f"{local(f.started_at, tz)}, #{f.id})")
    lines.append("")
    lines.append(t["digest.footer"].format(when=when))
    head = t["digest.title"].format(n=len(items), account=accounts)
    return clean_title(head), clean_body("\n".join(lines))
