"""Composing the e-mail for one delivery job: a proper MIME message built only from safe parts.

Everything a visitor typed is untrusted. It goes into the *body* (plain text and HTML, the HTML
escaped) and, after sanitising, into exactly two headers: ``Reply-To`` (only a single,
syntactically plain address) and the tail of ``Subject``. Recipients come from the config,
never from the submission: postwatch is not a relay.

Header safety does not rely on the ``email`` package alone: every untrusted header value is
reduced to one line of printable text (control characters, CR, LF, NUL and Unicode line
separators removed), RFC 2047 encoded-word openers ``=?`` are broken up so that text that looks
like an encoded word is shown as typed instead of being decoded into something else, and the
length is capped. The ``email`` package (policy ``SMTP``) then encodes and folds it.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Any

from postwatch import __version__
from postwatch.config import AccountConfig, Config, FormConfig
from postwatch.outbox import MailInput

#: Field names shown first (in this order) when present; the rest follow sorted, ``message``
#: and similar long texts last. The order does not depend on the database (PostgreSQL's JSONB
#: does not keep key order).
FIRST_FIELDS = ("name", "first_name", "last_name", "company", "email", "phone", "subject")
LAST_FIELDS = ("message", "comment", "comments", "body", "text")

MAX_SUBJECT_TAIL = 80
MAX_NAME = 80

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_ADDRESS = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+$")
_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


# --------------------------------------------------------------------------- sanitising


def one_line(value: Any, limit: int) -> str:
    """Untrusted text reduced to one safe header line of at most ``limit`` characters."""
    text = value if isinstance(value, str) else _text(value)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\r\n\t\v\f\x85\u2028\u2029" or cat in ("Zl", "Zp"):
            out.append(" ")
        elif cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue  # NUL, other controls, bidi overrides, surrogates, unassigned
        else:
            out.append(ch)
    text = re.sub(r"\s+", " ", "".join(out)).strip()
    # "=?utf-8?q?...?=" typed by a visitor stays literal text, never a decoded encoded word
    text = text.replace("=?", "=\u200b?").replace("?=", "?\u200b=")
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "\u2026"
    return text


def single_address(value: Any) -> str | None:
    """The visitor's address if it is exactly one plain ``local@domain`` address, else None.

    No display names, comments, lists, quoted local parts, IP literals or non-ASCII: anything
    unusual is simply not used as Reply-To (it still appears in the body).
    """
    if isinstance(value, list):
        if len(value) != 1:
            return None
        value = value[0]
    if not isinstance(value, str):
        return None
    v = value.strip()
    if len(v) > 254 or not _PLAIN_ADDRESS.match(v):
        return None
    local, _, domain = v.rpartition("@")
    if len(local) > 64:
        return None
    return f"{local}@{domain.lower()}"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _body_text(value: Any) -> str:
    """Body text: keep line breaks, drop NUL and other control characters."""
    text = _text(value).replace("\r\n", "\n").replace("\r", "\n")
    return "".join(
        ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs")
    )


def ordered_fields(fields: Mapping[str, Any], skip: Iterable[str] = ()) -> list[tuple[str, Any]]:
    skip = set(skip)
    keys = [k for k in fields if k not in skip]
    first = [k for k in FIRST_FIELDS if k in keys]
    last = [k for k in LAST_FIELDS if k in keys]
    middle = sorted(k for k in keys if k not in first and k not in last)
    return [(k, fields[k]) for k in (*first, *middle, *last)]


def _safe_filename(name: str) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = one_line(name, 120).replace('"', "'")
    return name or "attachment"


# --------------------------------------------------------------------------- composing


def compose(config: Config, mail: MailInput) -> EmailMessage:
    found = config.form(f"{mail.account}/{mail.form}")
    if found is None:
        raise LookupError(f"form {mail.account}/{mail.form} is no longer in the config")
    account, form = found

    skip = {config.intake.honeypot_field}
    if form.honeypot_field:
        skip.add(form.honeypot_field)
    fields = ordered_fields(mail.fields, skip)

    msg = EmailMessage(policy=SMTP)
    label = form.name or form.id
    sender_name = one_line(f"{account.name or account.id} ({label})", MAX_NAME)
    msg["From"] = Address(display_name=sender_name, addr_spec=config.smtp.sender)
    msg["To"] = Address(addr_spec=mail.recipient)
    reply_to = single_address(mail.fields.get(form.email_field))
    if reply_to is not None:
        name = one_line(mail.fields.get("name", ""), MAX_NAME) if "name" in mail.fields else ""
        msg["Reply-To"] = Address(display_name=name, addr_spec=reply_to)
    msg["Subject"] = subject(account, form, mail)
    msg["Date"] = format_datetime(mail.received_at)
    msg["Message-ID"] = mail.message_id
    msg["X-Postwatch-Submission"] = mail.submission_id
    msg["X-Postwatch-Form"] = f"{account.id}/{form.id}"
    if mail.role == "fallback":
        msg["X-Postwatch-Fallback-For"] = ", ".join(r for r, _ in mail.because) or "-"
    msg["X-Mailer"] = f"postwatch {__version__}"

    intro = _intro(account, form, mail)
    msg.set_content(_plain(intro, fields, mail), charset="utf-8", cte="quoted-printable")
    msg.add_alternative(_html(intro, fields, mail), subtype="html", charset="utf-8",
                        cte="quoted-printable")
    for att in mail.attachments:
        ctype = att.content_type.lower().strip()
        if not _MIME_TYPE.match(ctype) or ctype.startswith(("multipart/", "message/")):
            ctype = "application/octet-stream"
        maintype, _, subtype = ctype.partition("/")
        if maintype == "text":
            maintype, subtype = "application", "octet-stream"  # never re-decode visitor text
        msg.add_attachment(
            att.data, maintype=maintype, subtype=subtype, filename=_safe_filename(att.filename)
        )
    return msg


def subject(account: AccountConfig, form: FormConfig, mail: MailInput) -> str:
    base = form.subject or f"New message via {form.name or form.id} ({account.name or account.id})"
    base = one_line(base, 120)
    tail = one_line(mail.fields.get("subject", ""), MAX_SUBJECT_TAIL)
    text = f"{base}: {tail}" if tail else base
    if mail.role == "fallback":
        text = f"[copy] {text}"
    return text


def _intro(account: AccountConfig, form: FormConfig, mail: MailInput) -> list[str]:
    lines = [
        f"New submission on the form \"{form.name or form.id}\" of {account.name or account.id}.",
        f"Received: {mail.received_at.strftime('%Y-%m-%d %H:%M:%S %Z')}",
    ]
    if mail.role == "fallback":
        why = "; ".join(f"{r} ({reason})" for r, reason in mail.because) or "a recipient"
        lines.append(
            f"You receive this copy because it could not be delivered to: {why}. postwatch keeps "
            "trying the original recipient; reply to the visitor from here if it is urgent."
        )
    return lines


def _plain(intro: list[str], fields: list[tuple[str, Any]], mail: MailInput) -> str:
    out = [*intro, ""]
    for key, value in fields:
        text = _body_text(value)
        name = one_line(key, 100)
        if "\n" in text:
            out.append(f"{name}:")
            out.extend(f"  {line}" for line in text.split("\n"))
        else:
            out.append(f"{name}: {text}")
    if mail.attachments:
        out.append("")
        names = ", ".join(_safe_filename(a.filename) for a in mail.attachments)
        out.append(f"Attachments: {names}")
    out.append("")
    out.append(f"-- \npostwatch submission {mail.submission_id}")
    return "\n".join(out) + "\n"


def _html(intro: list[str], fields: list[tuple[str, Any]], mail: MailInput) -> str:
    e = html.escape
    rows = "\n".join(
        f"<tr><th style=\"text-align:left;vertical-align:top;padding:2px 12px 2px 0\">"
        f"{e(one_line(k, 100))}</th><td>{e(_body_text(v)).replace(chr(10), '<br>')}</td></tr>"
        for k, v in fields
    )
    paras = "\n".join(f"<p>{e(line)}</p>" for line in intro)
    atts = ""
    if mail.attachments:
        names = ", ".join(e(_safe_filename(a.filename)) for a in mail.attachments)
        atts = f"<p>Attachments: {names}</p>"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n"
        f"{paras}\n<table>\n{rows}\n</table>\n{atts}\n"
        f"<p style=\"color:#888\">postwatch submission {e(mail.submission_id)}</p>\n"
        "</body></html>\n"
    )
