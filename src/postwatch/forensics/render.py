"""Renderers of a :class:`Report`: JSON (the numbers), HTML (for people), CSV (one row per form
message).

The HTML report is one self-contained file: no scripts, no stylesheets, fonts or images from
elsewhere, the chart is inline SVG.  Everything that comes from a log (addresses, user agents,
reply texts) is HTML-escaped by Jinja2's autoescaping; CSV cells that a spreadsheet would run as
a formula are prefixed with a quote.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, tzinfo
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from markupsafe import Markup, escape

from postwatch.forensics.model import FormMessage, Report

if TYPE_CHECKING:
    from jinja2 import Template

_REASON_WORDS = {
    "mailbox_full": "the mailbox was full",
    "user_unknown": "the address did not exist",
    "host_unknown": "the mail server's name could not be found",
    "suspended": "the mailbox was disabled",
    "rejected": "the receiving server refused them (policy or spam filter)",
    "message_too_big": "the messages were too big",
    "rate_limited": "the receiving server was limiting the rate",
    "expired": "they waited too long in the queue",
    "network": "the receiving server could not be reached",
    "other": "of errors the logs do not explain",
    "unknown": "of errors the logs do not explain",
}


def display_tz(rep: Report) -> tzinfo | None:
    """The zone the report shows times in: ``--display-timezone``, else the logs' times as
    parsed (already in ``--timezone``)."""
    if not rep.display_timezone:
        return None
    from zoneinfo import ZoneInfo

    return ZoneInfo(rep.display_timezone)


def _shown(t: datetime, tz: tzinfo | None) -> datetime:
    return t.astimezone(tz) if tz is not None and t.tzinfo is not None else t


def _iso(t: datetime | None, tz: tzinfo | None = None) -> str | None:
    return _shown(t, tz).isoformat() if t is not None else None


def _iso_text(text: str, tz: tzinfo | None) -> str:
    """An ISO time from the event log (UTC) in the display zone (or the logs' zone)."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return text
    return _shown(t, tz).isoformat()


def _human(t: datetime | None, tz: tzinfo | None = None) -> str:
    if t is None:
        return "-"
    return _shown(t, tz).strftime("%a %d %b %Y %H:%M %Z").strip()


def report_dict(rep: Report) -> dict[str, Any]:
    """The JSON shape (the keys of issue 3, plus more)."""
    tz = display_tz(rep)
    return {
        "query": {
            "mailbox": rep.mailbox,
            "form_paths": rep.form_paths,
            "form_sender": rep.form_sender,
            "vhost": rep.vhost,
            "timezone": rep.timezone,
            "display_timezone": rep.display_timezone or rep.timezone,
            "since": _iso(rep.since, tz),
            "until": _iso(rep.until, tz),
            "matching": rep.matching,
        },
        "generated_at": _iso(rep.generated_at, tz),
        "answer": answer(rep),
        "submissions": {
            "total": rep.submissions_total,
            "rejected": rep.submissions_rejected,
            "by_status": {str(k): v for k, v in sorted(rep.submissions_by_status.items())},
            "unmatched": rep.submissions_unmatched,
        },
        "mail": {
            "form_messages": len(rep.form_messages),
            "delivered": rep.count("delivered"),
            "bounced": rep.count("bounced"),
            "pending": rep.count("pending"),
            "by_reason": rep.by_reason,
            "first_mailbox_full": _iso(rep.first_mailbox_full, tz),
            "last_mailbox_full": _iso(rep.last_mailbox_full, tz),
            "mailbox_full_failures": rep.mailbox_full_failures,
            "rejected_at_rcpt": rep.rejected_at_rcpt,
            "dovecot_quota_lines": rep.dovecot_quota_lines,
        },
        "mailbox": {
            "address": rep.mailbox,
            "received_before_full": {
                "form": rep.received_before_full_form,
                "other": rep.received_before_full_other,
            },
            "full_episodes": [
                {
                    "start": _iso(e.start, tz),
                    "end": _iso(e.end, tz),
                    "failures": e.failures,
                    "recovered": _iso(e.recovered, tz),
                }
                for e in rep.episodes
            ],
        },
        "submitters": {"recovered": rep.recovered_submitters},
        "messages": [_message_dict(m, tz) for m in rep.form_messages],
        "hourly": [
            {
                "hour": _iso(h.start, tz),
                "submissions": h.submissions,
                "delivered": h.delivered,
                "mailbox_full": h.mailbox_full,
            }
            for h in rep.hours
        ],
        "signups": None if rep.signups is None else {
            **rep.signup_counts(),
            "total": len(rep.signups),
            "list": [
                {"submission": s.submission, "received": _iso(s.received, tz), "form": s.form,
                 "where": s.where, "reached_mailbox": _iso(s.reached_mailbox, tz),
                 "copies": s.copies, "reason": s.last_reason}
                for s in rep.signups
            ],
        },
        "history": {
            "notifications": [r | {"at": _iso_text(r["at"], tz)} for r in rep.notifications],
            "quota": [r | {"at": _iso_text(r["at"], tz)} for r in rep.quota_history],
        },
        "unanswered": rep.unanswered,
        "coverage": {
            "mail": [_iso(rep.mail_coverage[0], tz), _iso(rep.mail_coverage[1], tz)],
            "access": [_iso(rep.access_coverage[0], tz), _iso(rep.access_coverage[1], tz)],
        },
        "inputs": [
            {
                "path": i.path,
                "kind": i.kind,
                "format": i.format,
                "sha256": i.sha256,
                "bytes": i.size,
                "lines": i.lines,
                "unparsed": i.unparsed,
                "first": i.first,
                "last": i.last,
            }
            for i in rep.inputs
        ],
    }


def _message_dict(m: FormMessage, tz: tzinfo | None) -> dict[str, Any]:
    return {
        "queue_id": m.queue_id,
        "mta": m.mta,
        "arrived": _iso(m.arrived, tz),
        "sender": m.sender,
        "outcome": m.outcome,
        "reason": m.reason,
        "permanent": m.permanent,
        "status": m.status,
        "attempts": m.attempts,
        "last_attempt": _iso(m.last_attempt, tz),
        "delivered_at": _iso(m.delivered_at, tz),
        "other_recipients": m.other_recipients,
        "submission": _iso(m.submission, tz),
    }


def render_json(rep: Report) -> str:
    return json.dumps(report_dict(rep), indent=2, ensure_ascii=False) + "\n"


# --- the three sentences ----------------------------------------------------------------
def _window_phrase(rep: Report) -> str:
    tz = display_tz(rep)
    if rep.since and rep.until:
        return f"Between {_human(rep.since, tz)} and {_human(rep.until, tz)}"
    if rep.since:
        return f"Since {_human(rep.since, tz)}"
    if rep.until:
        return f"Until {_human(rep.until, tz)}"
    return "In the logs given"


def _n(count: int, word: str) -> str:
    if count == 1:
        return f"1 {word}"
    plural = "people" if word == "person" else word + "s"
    return f"{count} {plural}"


def _signup_sentence(rep: Report) -> str:
    """With ``--config``: postwatch's own sign-ups, each counted once, with where it went."""
    c = rep.signup_counts()
    n = sum(c.values())
    mb = rep.mailbox
    if n == 0:
        return f"postwatch took in no sign-up for {mb} in this window."
    copies = sorted({a for s in rep.signups or () for a in s.copies})
    to = f" to {', '.join(copies)}" if copies else ""
    if c["primary"] == n:
        s = f"All {_n(n, 'sign-up')} reached {mb}"
    else:
        parts = [f"{c['primary'] + c['both']} reached {mb}"]
        if c["both"]:
            parts[0] += f" ({c['both']} of them also as a fallback copy{to})"
        if c["fallback"]:
            parts.append(f"{c['fallback']} only as the fallback copy{to}")
        if c["waiting"]:
            parts.append(f"{c['waiting']} reached nobody yet and postwatch still tries")
        s = f"Of the {_n(n, 'sign-up')}, " + ", ".join(parts)
    return s + f"; {_n(c['lost'], 'sign-up')} lost."


def answer(rep: Report) -> list[str]:
    """The answer in three sentences, for a person who reads nothing else."""
    tz = display_tz(rep)
    n = len(rep.form_messages)
    delivered, bounced, pending = rep.count("delivered"), rep.count("bounced"), rep.count("pending")
    access = any(i.kind == "access" for i in rep.inputs)
    if rep.signups is not None:
        s1 = f"{_window_phrase(rep)}, postwatch took in {_n(len(rep.signups), 'sign-up')} for "\
            f"{rep.mailbox}"
        if access:
            s1 += f" (the web server logged {_n(rep.submissions_total, 'form submission')}"
            if rep.submissions_rejected:
                s1 += f" and refused {rep.submissions_rejected} more"
            s1 += ")"
        s1 += "."
        s2 = _signup_sentence(rep)
    else:
        if access:
            times = _n(rep.submissions_total, "time")
            s1 = f"{_window_phrase(rep)}, the form was submitted {times}"
            if rep.submissions_rejected:
                s1 += f" ({_n(rep.submissions_rejected, 'more attempt')} refused by the web server)"
            s1 += "."
        else:
            s1 = f"{_window_phrase(rep)}, the mail logs show {_n(n, 'form mail')} to "\
                f"{rep.mailbox} (no access log was given: form submissions not counted)."
        reasons = rep.by_reason
        if n == 0:
            s2 = f"No form mail to {rep.mailbox} was found in the mail logs."
        elif delivered == n:
            s2 = f"All {_n(n, 'form mail')} reached {rep.mailbox}."
        else:
            top = next(iter(reasons), "unknown")
            s2 = (
                f"Only {delivered} of the {_n(n, 'form mail')} reached {rep.mailbox}: {bounced} "
                f"bounced and {pending} still waited when the logs end, mostly because "
                f"{_REASON_WORDS.get(top, top)}."
            )
    lost = rep.recovered_submitters if rep.signups is None else []
    people = (
        f", and the {_n(len(lost), 'person')} whose sign-up did not arrive "
        f"{'is' if len(lost) == 1 else 'are'} listed below."
        if lost
        else "."
    )
    first, last = rep.first_mailbox_full, rep.last_mailbox_full
    # the episodes table lists every episode in the logs: the sentence counts the same ones
    earlier = [e for e in rep.episodes if first is not None and e.end < first]
    during = [e for e in rep.episodes if e not in earlier]
    if len(earlier) == 1:
        before = f"it had been full once before, on {_human(earlier[0].start, tz)}"
    elif earlier:
        first_on = _human(earlier[0].start, tz)
        before = f"it had been full {len(earlier)} times before, the first on {first_on}"
    else:
        before = "the logs show no earlier episode"
    if first is not None and last is not None:
        s3 = (
            f"The mailbox refused mail as full {_n(rep.mailbox_full_failures, 'time')} from "
            f"{_human(first, tz)} to {_human(last, tz)}"
        )
        if len(during) > 1:
            s3 += f", in {len(during)} separate episodes"
        s3 += f" ({before})"
        if rep.episodes and rep.episodes[-1].recovered is None:
            s3 += ", and it is still full when the logs end"
        s3 += people
    elif rep.episodes:
        s3 = (f"The mailbox was not full in the window, but the logs show "
              f"{_n(len(rep.episodes), 'earlier episode')}, the first on "
              f"{_human(rep.episodes[0].start, tz)}" + people)
    else:
        s3 = "The mail logs never report the mailbox as full" + people
    return [s1, s2, s3]


# --- CSV --------------------------------------------------------------------------------
CSV_COLUMNS = (
    "arrived",
    "queue_id",
    "mta",
    "sender",
    "outcome",
    "reason",
    "permanent",
    "status",
    "attempts",
    "last_attempt",
    "delivered_at",
    "submission",
    "other_recipients",
    "evidence",
)


def _cell(value: Any, tz: tzinfo | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _shown(value, tz).isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        value = " ".join(value)
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text  # a spreadsheet must not run a log's contents as a formula
    return text


def render_csv(rep: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    tz = display_tz(rep)
    for m in rep.form_messages:
        w.writerow(
            [
                _cell(m.arrived, tz),
                _cell(m.queue_id),
                _cell(m.mta),
                _cell(m.sender),
                _cell(m.outcome),
                _cell(m.reason),
                _cell(m.permanent),
                _cell(m.status),
                _cell(m.attempts),
                _cell(m.last_attempt, tz),
                _cell(m.delivered_at, tz),
                _cell(m.submission, tz),
                _cell(m.other_recipients),
                _cell(m.evidence),
            ]
        )
    return buf.getvalue()


# --- HTML -------------------------------------------------------------------------------
def chart_svg(rep: Report, width: int = 960, height: int = 260) -> Markup:
    """Hourly bars: submissions, form mails delivered, mailbox-full failures (inline SVG)."""
    hours = rep.hours
    if not hours:
        return Markup("<p>No hourly data in the window.</p>")
    left, bottom, top = 40, 40, 20
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max(max(h.submissions, h.delivered, h.mailbox_full) for h in hours) or 1
    slot = plot_w / len(hours)
    bar = max(slot / 3.5, 0.5)
    colors = ("#3465a4", "#4e9a06", "#cc0000")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="per-hour chart">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" '
        'stroke="#555"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" font-size="10">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" font-size="10">0</text>',
    ]
    label_every = max(1, len(hours) // 12)
    for i, h in enumerate(hours):
        x0 = left + i * slot
        for j, value in enumerate((h.submissions, h.delivered, h.mailbox_full)):
            if value:
                bh = plot_h * value / peak
                parts.append(
                    f'<rect x="{x0 + j * bar:.2f}" y="{top + plot_h - bh:.2f}" width="{bar:.2f}" '
                    f'height="{bh:.2f}" fill="{colors[j]}"><title>'
                    f"{escape(h.start.strftime('%d %b %H:00'))}: {value}</title></rect>"
                )
        if i % label_every == 0 and x0 < width - 70:
            parts.append(
                f'<text x="{x0:.2f}" y="{top + plot_h + 14}" font-size="9">'
                f"{escape(h.start.strftime('%d %b %H:00'))}</text>"
            )
    for j, name in enumerate(("submissions", "form mails delivered", "mailbox-full failures")):
        x = left + j * 180
        parts.append(f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{colors[j]}"/>')
        parts.append(f'<text x="{x + 14}" y="{height - 5}" font-size="11">{name}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


@cache
def _template() -> Template:
    """The HTML template, compiled on first use (JSON and CSV reports need no Jinja2)."""
    from jinja2 import Environment

    return Environment(autoescape=True).from_string(
        resources.files("postwatch.forensics").joinpath("report.html.j2").read_text(encoding="utf-8")
    )


def render_html(rep: Report) -> str:
    data = report_dict(rep)
    first_evidence = rep.episodes[0].first_evidence if rep.episodes else None
    return _template().render(d=data, chart=chart_svg(rep), first_evidence=first_evidence)
