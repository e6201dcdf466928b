"""The responsibility sheet of one account: who is told about what, how, and who is next.

Plain text for the terminal and a one-page HTML document (everything escaped) a hoster can
attach to the agreement with the customer.
"""

from __future__ import annotations

from html import escape

from postwatch.alerts import routing
from postwatch.alerts.engine import _fmt_duration
from postwatch.alerts.schedule import describe_digest
from postwatch.config import AccountConfig, Config


def _rows(config: Config, account: AccountConfig) -> list[tuple[str, str, str, str]]:
    """(concern, described, first told, then)."""
    out = []
    matrix = routing.responsibilities(account)
    for concern in sorted(matrix, key=lambda c: (c not in routing.CONCERNS, c)):
        levels = routing.ladder(config, account, concern)
        desc = routing.CONCERN_TEXT["en"].get(concern, concern)
        first = ", ".join(
            f"{c.name} ({c.role})" for c in account.contacts if levels and c.role in levels[0]
        )
        wanted = ", ".join(matrix[concern])
        if not first:
            first = f"nobody: no contact with role {wanted}"
        then = " -> ".join(
            ", ".join(f"{c.name} ({c.role})" for c in account.contacts if c.role in lv)
            for lv in levels[1:]
        )
        out.append((concern, desc, first, then or "-"))
    return out


def _contacts(account: AccountConfig) -> list[tuple[str, str, str, str, list[str]]]:
    out: list[tuple[str, str, str, str, list[str]]] = []
    own = routing.own_mail_path(account)
    for c in account.contacts:
        chans = []
        for info in routing.contact_channels(c):
            note = ""
            if not info.valid:
                note = "  [not usable: " + (info.error or "invalid") + "]"
            elif own.reason(info):
                note = "  [not used for this account's mailbox alerts: same mail path]"
            chans.append(info.masked + note)
        quiet = c.quiet_hours or "-"
        tz = c.timezone or "default"
        out.append((c.name, c.role, c.language, f"{quiet} ({tz})", chans))
    return out


def text_sheet(config: Config, account: AccountConfig) -> str:
    a = config.alerts
    lines = [
        f"Responsibilities: {account.name or account.id} (account {account.id})",
        "",
        "Watched: "
        + (", ".join(m.address for m in account.mailboxes) or "no mailboxes")
        + "; "
        + (", ".join(str(s.root) for s in account.sites) or "no sites"),
        "",
        "Concern      First told                          Then, if nobody acknowledges",
    ]
    for concern, desc, first, then in _rows(config, account):
        lines.append(f"{concern:<12} {first:<35} {then}")
        lines.append(f"{'':<12} ({desc})")
    lines += ["", "Contacts"]
    for name, role, lang, quiet, chans in _contacts(account):
        lines.append(f"- {name} ({role}, {lang}), quiet hours {quiet}")
        for i, ch in enumerate(chans, 1):
            lines.append(f"    {i}. {ch}")
        if not chans:
            lines.append("    (no channels)")
    lines += [
        "",
        "Rules",
        f"- Escalation: not acknowledged within {_fmt_duration(a.escalate_after)} -> next "
        f"role along {' -> '.join(a.escalation)}.",
        f"- Reminders every {_fmt_duration(a.repeat_every)} while firing and not acknowledged.",
        f"- Low-severity items (e.g. 80% full) go into one digest, "
        f"{describe_digest(a.digest, 'en') or 'off'}.",
        "- Critical alerts are sent during quiet hours too; others wait until they end.",
        "- A notification about a mailbox is never sent to that mailbox, nor through the mail "
        "server that is failing it; the next channel is used instead.",
    ]
    return "\n".join(lines) + "\n"


def html_sheet(config: Config, account: AccountConfig) -> str:
    a = config.alerts
    e = escape
    rows = "".join(
        f"<tr><td><strong>{e(c)}</strong><br><small>{e(d)}</small></td><td>{e(f)}</td>"
        f"<td>{e(t)}</td></tr>"
        for c, d, f, t in _rows(config, account)
    )
    contacts = "".join(
        f"<tr><td>{e(n)}</td><td>{e(r)}</td><td>{e(lang)}</td><td>{e(q)}</td><td><ol>"
        + "".join(f"<li><code>{e(ch)}</code></li>" for ch in chans)
        + "</ol></td></tr>"
        for n, r, lang, q, chans in _contacts(account)
    )
    title = f"Responsibilities: {account.name or account.id}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;font-size:11pt;max-width:48em;margin:2em auto}}
table{{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}}
td,th{{border:1px solid #999;padding:.3em .5em;text-align:left;vertical-align:top}}
ol{{margin:0;padding-left:1.2em}} code{{font-size:9pt;word-break:break-all}}
@media print{{body{{margin:0}}}}
</style></head><body>
<h1>{e(title)}</h1>
<p>Account <code>{e(account.id)}</code>. Mailboxes watched:
{e(", ".join(m.address for m in account.mailboxes) or "none")}.
Sites: {e(", ".join(str(s.root) for s in account.sites) or "none")}.</p>
<h2>Who is told about what</h2>
<table><tr><th>Concern</th><th>First told</th><th>Then, if nobody acknowledges</th></tr>
{rows}</table>
<h2>Contacts and channels (tried in order)</h2>
<table><tr><th>Name</th><th>Role</th><th>Language</th><th>Quiet hours</th><th>Channels</th></tr>
{contacts}</table>
<h2>Rules</h2>
<ul>
<li>Not acknowledged within {e(_fmt_duration(a.escalate_after))}: the next role along
{e(" → ".join(a.escalation))} is told.</li>
<li>Reminders every {e(_fmt_duration(a.repeat_every))} while an alert is firing and not
acknowledged.</li>
<li>Low-severity items go into one digest, {e(describe_digest(a.digest, "en") or "off")}.</li>
<li>Critical alerts are sent during quiet hours too; others wait until they end.</li>
<li>A notification about a mailbox is never sent to that mailbox, nor through the mail server
that is failing it; the next channel is used instead.</li>
</ul>
</body></html>
"""
