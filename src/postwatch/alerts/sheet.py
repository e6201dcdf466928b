"""The responsibility sheet of one account: who is told about what, how, and who is next.

Plain text for the terminal and a one-page HTML document (everything escaped) a hoster can
attach to the agreement with the customer; in English or Dutch.
"""

from __future__ import annotations

from html import escape

from postwatch.alerts import messages, routing
from postwatch.alerts.schedule import describe_digest
from postwatch.config import AccountConfig, Config

L = {
    "en": {
        "title": "Responsibilities: {name}",
        "account": "Account",
        "watched": "Mailboxes watched",
        "sites": "Sites",
        "fallback": "Fallback for sign-ups",
        "none": "none",
        "who": "Who is told about what",
        "concern": "Concern",
        "first": "First told",
        "then": "Then, if nobody acknowledges",
        "nobody": "nobody: no contact with role {roles}",
        "contacts": "Contacts and channels (tried in order)",
        "name": "Name",
        "role": "Role",
        "language": "Language",
        "quiet": "Quiet hours",
        "channels": "Channels",
        "no_channels": "(no channels)",
        "unusable": "not usable",
        "same_path": "not used for this account's mailbox alerts: same mail path",
        "rules": "Rules",
        "r_escalate": "Not acknowledged within {after}: the next role along {chain} is told.",
        "r_repeat": "Reminders every {every} while an alert is firing and not acknowledged.",
        "r_digest": "Low-severity items (e.g. 80% full) go into one digest, {when}.",
        "r_quiet": "Critical alerts are sent during quiet hours too; others wait until they end.",
        "r_path": (
            "A notification about a mailbox is never sent to that mailbox, nor through the "
            "mail server that is failing it; the next channel is used instead."
        ),
        "off": "off",
        "default": "default",
    },
    "nl": {
        "title": "Verantwoordelijkheden: {name}",
        "account": "Account",
        "watched": "Bewaakte mailboxen",
        "sites": "Websites",
        "fallback": "Reserveadres",
        "none": "geen",
        "who": "Wie hoort waarover",
        "concern": "Onderwerp",
        "first": "Eerst gemeld aan",
        "then": "Daarna, als niemand bevestigt",
        "nobody": "niemand: geen contact met rol {roles}",
        "contacts": "Contactpersonen en kanalen (in deze volgorde geprobeerd)",
        "name": "Naam",
        "role": "Rol",
        "language": "Taal",
        "quiet": "Stille uren",
        "channels": "Kanalen",
        "no_channels": "(geen kanalen)",
        "unusable": "niet bruikbaar",
        "same_path": "niet gebruikt voor mailboxmeldingen van dit account: zelfde mailpad",
        "rules": "Afspraken",
        "r_escalate": (
            "Niet bevestigd binnen {after}: de volgende rol in {chain} krijgt de melding."
        ),
        "r_repeat": "Herinneringen elke {every} zolang een melding actief en niet bevestigd is.",
        "r_digest": "Minder dringende punten (bijv. 80% vol) komen in één overzicht, {when}.",
        "r_quiet": (
            "Kritieke meldingen komen ook in stille uren; andere wachten tot die voorbij zijn."
        ),
        "r_path": (
            "Een melding over een mailbox gaat nooit naar die mailbox, en nooit via de "
            "mailserver die hem weigert; dan wordt het volgende kanaal gebruikt."
        ),
        "off": "uit",
        "default": "standaard",
    },
}


def _rows(config: Config, account: AccountConfig, lang: str) -> list[tuple[str, str, str, str]]:
    """(concern, described, first told, then)."""
    t = L[lang]
    out = []
    matrix = routing.responsibilities(account)
    for concern in sorted(matrix, key=lambda c: (c not in routing.CONCERNS, c)):
        levels = routing.ladder(config, account, concern)
        desc = routing.CONCERN_TEXT[lang].get(concern, concern)
        first = ", ".join(
            f"{c.name} ({c.role})" for c in account.contacts if levels and c.role in levels[0]
        )
        if not first:
            first = t["nobody"].format(roles=", ".join(matrix[concern]))
        then = " -> ".join(
            ", ".join(f"{c.name} ({c.role})" for c in account.contacts if c.role in lv)
            for lv in levels[1:]
        )
        out.append((concern, desc, first, then or "-"))
    return out


def _contacts(account: AccountConfig, lang: str) -> list[tuple[str, str, str, str, list[str]]]:
    t = L[lang]
    out: list[tuple[str, str, str, str, list[str]]] = []
    own = routing.own_mail_path(account)
    for c in account.contacts:
        chans = []
        for info in routing.contact_channels(c):
            note = ""
            if not info.valid:
                note = f"  [{t['unusable']}: {info.error or '?'}]"
            elif own.reason(info):
                note = f"  [{t['same_path']}]"
            chans.append(info.masked + note)
        tz = c.timezone or t["default"]
        quiet = f"{c.quiet_hours} ({tz})" if c.quiet_hours else t["none"]
        out.append((c.name, c.role, c.language, quiet, chans))
    return out


def _rules(config: Config, lang: str) -> list[str]:
    t = L[lang]
    a = config.alerts
    return [
        t["r_escalate"].format(after=messages.fmt_duration(a.escalate_after),
                               chain=" -> ".join(a.escalation)),
        t["r_repeat"].format(every=messages.fmt_duration(a.repeat_every)),
        t["r_digest"].format(when=describe_digest(a.digest, lang) or t["off"]),
        t["r_quiet"],
        t["r_path"],
    ]


def _sites(account: AccountConfig) -> str:
    return ", ".join(f"{s.name} ({s.root})" if s.name else str(s.root) for s in account.sites)


def _fallbacks(account: AccountConfig) -> str:
    """Each form's fallback recipients: 'form: a, b'."""
    return "; ".join(
        f"{f.id}: {', '.join(str(a) for a in f.fallback)}" for f in account.forms if f.fallback
    )


def text_sheet(config: Config, account: AccountConfig, lang: str = "en") -> str:
    t = L[lang]
    lines = [
        t["title"].format(name=account.name or account.id) + f" ({t['account']} {account.id})",
        "",
        f"{t['watched']}: " + (", ".join(m.address for m in account.mailboxes) or t["none"]),
        f"{t['sites']}: " + (_sites(account) or t["none"]),
        f"{t['fallback']}: " + (_fallbacks(account) or t["none"]),
        "",
        f"{t['concern']:<12} {t['first']:<35} {t['then']}",
    ]
    for concern, desc, first, then in _rows(config, account, lang):
        lines.append(f"{concern:<12} {first:<35} {then}")
        lines.append(f"{'':<12} ({desc})")
    lines += ["", t["contacts"]]
    for name, role, language, quiet, chans in _contacts(account, lang):
        lines.append(f"- {name} ({role}, {language}), {t['quiet'].lower()} {quiet}")
        for i, ch in enumerate(chans, 1):
            lines.append(f"    {i}. {ch}")
        if not chans:
            lines.append(f"    {t['no_channels']}")
    lines += ["", t["rules"]]
    lines += [f"- {r}" for r in _rules(config, lang)]
    return "\n".join(lines) + "\n"


def _channel_html(channel: str) -> str:
    """A masked channel URL, with its note (unusable, same mail path) set apart below it."""
    url, _, note = channel.partition("  [")
    out = f"<code>{escape(url)}</code>"
    if note:
        out += f'<br><span class="warn">{escape(note.removesuffix("]"))}</span>'
    return out


# One A4 page to attach to an agreement; on a phone the tables become stacked cards.
_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;font-size:11pt;line-height:1.4;
color:#1d1d1f;max-width:52em;margin:2em auto;padding:0 1em}
h1{font-size:1.6em;margin:0 0 .3em} h2{font-size:1.15em;margin:1.6em 0 .4em;
border-bottom:2px solid #3465a4;padding-bottom:.15em}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:0 0 1em}
.facts dt{color:#555} .facts dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;margin:.4em 0 1em}
td,th{border:1px solid #bbb;padding:.4em .55em;text-align:left;vertical-align:top}
th{background:#eef2f7;font-weight:600}
.concern strong{display:block} .concern small{color:#666}
ol{margin:0;padding-left:1.3em} li{margin:.1em 0}
code{font-size:.85em;overflow-wrap:anywhere} .warn{font-size:.85em;color:#8a4b00}
.rules li{margin:.3em 0}
table.contacts{table-layout:fixed} .contacts td{overflow-wrap:anywhere}
@media (max-width:40em){body{margin:1em auto;padding:0 .7em}
table,tbody,tr,td{display:block;width:100%} tr.head,colgroup{display:none}
tr{border:1px solid #bbb;border-radius:6px;margin:0 0 .8em;padding:.3em .2em}
td{border:0;padding:.2em .5em} td[data-label]::before{content:attr(data-label);display:block;
font-size:.8em;color:#666}}
@page{size:A4;margin:15mm}
@media print{body{max-width:none;margin:0;padding:0;font-size:9.5pt;line-height:1.3;color:#000}
h1{font-size:1.45em} h2{margin:1em 0 .3em} td,th{padding:.25em .45em} .rules li{margin:.15em 0}
th{background:#eee} tr,li{break-inside:avoid} h2{break-after:avoid}}
"""


def html_sheet(config: Config, account: AccountConfig, lang: str = "en") -> str:
    t = L[lang]
    e = escape

    def arrows(text: str) -> str:
        return e(text).replace(" -&gt; ", " &rarr; ")

    rows = "".join(
        f'<tr><td class="concern"><strong>{e(d[:1].upper() + d[1:])}</strong>'
        f"<small>{e(c)}</small></td>"
        f'<td data-label="{e(t["first"])}">{e(f)}</td>'
        f'<td data-label="{e(t["then"])}">{arrows(th)}</td></tr>'
        for c, d, f, th in _rows(config, account, lang)
    )
    contacts = "".join(
        f"<tr><td><strong>{e(n)}</strong></td>"
        f'<td data-label="{e(t["role"])}">{e(r)}</td>'
        f'<td data-label="{e(t["language"])}">{e(lg)}</td>'
        f'<td data-label="{e(t["quiet"])}">{e(q)}</td>'
        f'<td data-label="{e(t["channels"])}">'
        + (
            "<ol>" + "".join(f"<li>{_channel_html(ch)}</li>" for ch in chans) + "</ol>"
            if chans
            else e(t["no_channels"])
        )
        + "</td></tr>"
        for n, r, lg, q, chans in _contacts(account, lang)
    )
    rules = "".join(f"<li>{arrows(r)}</li>" for r in _rules(config, lang))
    title = t["title"].format(name=account.name or account.id)
    mailboxes = ", ".join(m.address for m in account.mailboxes) or t["none"]
    sites = _sites(account) or t["none"]
    fallbacks = _fallbacks(account) or t["none"]
    return f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{e(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{e(title)}</h1>
<dl class="facts"><dt>{e(t["account"])}</dt><dd><code>{e(account.id)}</code></dd>
<dt>{e(t["watched"])}</dt><dd>{e(mailboxes)}</dd>
<dt>{e(t["sites"])}</dt><dd>{e(sites)}</dd>
<dt>{e(t["fallback"])}</dt><dd>{e(fallbacks)}</dd></dl>
<h2>{e(t["who"])}</h2>
<table><tr class="head"><th>{e(t["concern"])}</th><th>{e(t["first"])}</th>
<th>{e(t["then"])}</th></tr>
{rows}</table>
<h2>{e(t["contacts"])}</h2>
<table class="contacts"><colgroup><col style="width:22%"><col style="width:12%">
<col style="width:11%"><col style="width:20%"><col></colgroup>
<tr class="head"><th>{e(t["name"])}</th><th>{e(t["role"])}</th><th>{e(t["language"])}</th>
<th>{e(t["quiet"])}</th><th>{e(t["channels"])}</th></tr>
{contacts}</table>
<h2>{e(t["rules"])}</h2>
<ul class="rules">{rules}</ul>
</body></html>
"""
