"""Read bounce messages: RFC 3464 delivery status notifications and the others.

:func:`analyse` takes one parsed message and says what it is (:class:`MessageKind`) and, for a
bounce or a delay warning, which recipients failed, with the enhanced status code, the
diagnostic text and the reason from the shared taxonomy (:mod:`postwatch.reasons`).

Order of the decision:

1. ``multipart/report`` says itself what it is: ``delivery-status`` (RFC 3464: per-recipient
   ``Action``/``Status``/``Diagnostic-Code``), ``disposition-notification`` (a read receipt,
   RFC 8098), ``feedback-report`` (an ARF spam complaint, RFC 5965).
2. Non-standard bounces, recognised by their fixed phrases: Exim, qmail (and vpopmail, Yahoo's
   old qmail-style bounces), Sendmail's non-DSN form, Exchange/Outlook's text NDR, Gmail's old
   text bounces, and anything with ``X-Failed-Recipients``. flufl.bounce finds addresses where
   the phrases do not.
3. Auto-replies (``Auto-Submitted: auto-replied`` without a bounce inside, vacation/out-of-office
   headers and subjects) are not failures, nor are delivery receipts (DSN ``Action: delivered``).

Hostile input (anyone can mail the bounce address): :func:`parse_bytes` bounds a message before
the standard library parses it. Only the first :data:`MAX_PARSE_BYTES` are read (a report comes
first; the attached original is what gets cut), and a message nested deeper than
:data:`MAX_MIME_DEPTH` MIME levels raises :class:`UnparsableMessage` (the stdlib parser recurses
per level and raised ``RecursionError`` at a few hundred). :func:`analyse` never raises.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import asdict, dataclass, field
from email.message import Message
from enum import StrEnum
from typing import Any

from postwatch.reasons import classify

MAX_TEXT = 256 * 1024
#: bytes of a message that are parsed; the rest (the tail of an attached original) is dropped
MAX_PARSE_BYTES = 2 * 1024 * 1024
#: MIME levels (multipart or message/*) a message may nest; real bounces use fewer than ten
MAX_MIME_DEPTH = 50


class UnparsableMessage(ValueError):
    """A message refused before parsing; ``headers`` holds its top-level header block only."""

    def __init__(self, problem: str, headers: Message) -> None:
        super().__init__(problem)
        self.headers = headers


class MessageKind(StrEnum):
    BOUNCE = "bounce"  # at least one permanent or final failure
    DELAY = "delay"  # a warning: delivery delayed, still being retried
    DELIVERY_RECEIPT = "delivery_receipt"  # DSN with Action: delivered / relayed / expanded
    READ_RECEIPT = "read_receipt"  # MDN, RFC 8098
    FEEDBACK_REPORT = "feedback_report"  # ARF, RFC 5965 (a spam complaint)
    AUTO_REPLY = "auto_reply"  # vacation, out of office
    NOT_A_BOUNCE = "not_a_bounce"
    UNPARSABLE = "unparsable"  # refused before parsing (see parse_bytes); never from analyse


@dataclass
class FailedRecipient:
    recipient: str | None
    status: str | None
    reason: str
    permanent: bool
    diagnostic: str | None
    action: str = "failed"  # failed | delayed


@dataclass
class BounceReport:
    kind: MessageKind
    source: str  # "dsn", "exim", "qmail", "sendmail", "exchange", "gmail", "generic", ...
    failures: list[FailedRecipient] = field(default_factory=list)
    subject: str | None = None
    original_message_id: str | None = None
    note: str | None = None  # e.g. the ARF feedback type, the auto-reply's subject

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = str(self.kind)
        return d


# ------------------------------------------------------------------------------------ helpers
_ADDR = r"[^\s<>()\[\]@,;:\"]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]{2,}"
_ADDR_RE = re.compile(_ADDR)
_STATUS_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY_RE = re.compile(r"\b([45]\d\d)[ -]((?:[45]\.\d{1,3}\.\d{1,3})?.*)")
_ORIGINAL_MARKERS = re.compile(
    r"^(?:-+ ?This is a copy of the message|--- ?Below this line is a copy of the message"
    r"|-+ ?Original message|-+ ?Forwarded message|Original message headers:"
    r"|-+ Message header follows|-+ ?Original Message -+)",
    re.IGNORECASE | re.MULTILINE,
)


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(str(text).split())
    return text or None


def _addr(value: str | None) -> str | None:
    """``rfc822; <Info@Gym.example>`` -> ``info@gym.example``."""
    if not value:
        return None
    value = str(value)
    if ";" in value:
        value = value.split(";", 1)[1]
    m = _ADDR_RE.search(value)
    return m.group(0).lower().strip(".") if m else None


def _status(value: str | None) -> str | None:
    if not value:
        return None
    m = _STATUS_RE.search(str(value))
    return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}" if m else None


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:
        return ""
    return _clean(str(value)) or "" if value is not None else ""


def _text_parts(msg: Message) -> str:
    """The human-readable text of a bounce, without attached original messages."""
    out: list[str] = []

    def walk(part: Message) -> None:
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "text/rfc822-headers", "message/delivery-status"):
            return
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                for p in payload:
                    if isinstance(p, Message):
                        walk(p)
            return
        if part.get_content_maintype() != "text":
            return
        try:
            raw = part.get_payload(decode=True)
        except Exception:
            raw = None
        if not isinstance(raw, bytes):
            raw = str(part.get_payload()).encode("utf-8", "replace")
        charset = part.get_content_charset() or "utf-8"
        try:
            text = raw.decode(charset, "replace")
        except LookupError:
            text = raw.decode("utf-8", "replace")
        if ctype == "text/html":
            text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>", "\n", text)
            text = re.sub(r"<[^>]+>", " ", text)
            text = re.sub(r"&nbsp;", " ", text).replace("&lt;", "<").replace("&gt;", ">")
            text = text.replace("&amp;", "&").replace("&#39;", "'").replace("&quot;", '"')
        out.append(text)

    walk(msg)
    text = "\n".join(out)[:MAX_TEXT].replace("\r\n", "\n")
    m = _ORIGINAL_MARKERS.search(text)
    return text[: m.start()] if m else text


def _original_message_id(msg: Message) -> str | None:
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                mid = payload[0].get("Message-ID")
                if mid:
                    return _clean(str(mid))
        elif ctype == "text/rfc822-headers":
            try:
                raw = part.get_payload(decode=True)
            except Exception:
                raw = None
            if isinstance(raw, bytes):
                m = re.search(rb"(?im)^Message-ID:\s*(<[^>\r\n]+>)", raw)
                if m:
                    return m.group(1).decode("utf-8", "replace")
    return None


def _verdict(diagnostic: str | None, status: str | None, context: str | None = None) -> Any:
    return classify(diagnostic or "", status=status, context=context)


def _failure(
    recipient: str | None,
    diagnostic: str | None,
    status: str | None = None,
    *,
    action: str = "failed",
    permanent: bool | None = None,
) -> FailedRecipient:
    diagnostic = _clean(diagnostic)
    status = status or _status(diagnostic)
    verdict = _verdict(diagnostic, status)
    perm = verdict.permanent if permanent is None else permanent
    if action == "delayed":
        perm = False
    return FailedRecipient(
        recipient=recipient,
        status=status or verdict.status,
        reason=str(verdict.reason),
        permanent=perm,
        diagnostic=diagnostic,
        action=action,
    )


# ---------------------------------------------------------------------------------- the DSN
def _dsn_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    # some MTAs send the status as text: parse its blocks ourselves
    text = str(payload)
    blocks = re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip())
    return [email.message_from_string(b + "\n") for b in blocks if b.strip()]


def _analyse_dsn(msg: Message, status_part: Message) -> BounceReport:
    blocks = _dsn_blocks(status_part)
    failures: list[FailedRecipient] = []
    delivered = 0
    for block in blocks[1:] if len(blocks) > 1 else blocks:
        action = _header(block, "Action").lower()
        recipient = _addr(_header(block, "Final-Recipient")) or _addr(
            _header(block, "Original-Recipient")
        )
        if not action and not recipient:
            continue
        if action in ("delivered", "relayed", "expanded"):
            delivered += 1
            continue
        diagnostic = _header(block, "Diagnostic-Code")
        if ";" in diagnostic[:20]:
            diagnostic = diagnostic.split(";", 1)[1].strip()
        status = _status(_header(block, "Status"))
        if action == "delayed":
            failures.append(_failure(recipient, diagnostic or None, status, action="delayed"))
        else:
            failures.append(_failure(recipient, diagnostic or None, status))
    if failures:
        kind = (
            MessageKind.DELAY
            if all(f.action == "delayed" for f in failures)
            else MessageKind.BOUNCE
        )
        if kind is MessageKind.BOUNCE:
            failures = [f for f in failures if f.action != "delayed"] + [
                f for f in failures if f.action == "delayed"
            ]
        return BounceReport(kind, "dsn", failures)
    if delivered:
        return BounceReport(MessageKind.DELIVERY_RECEIPT, "dsn")
    # a report without usable per-recipient blocks: try the text
    return BounceReport(MessageKind.NOT_A_BOUNCE, "dsn")


# ------------------------------------------------------------------------ non-standard forms
_EXIM_RE = re.compile(
    r"(?:following address\(es\) failed|could not be delivered to one or more of its\s+"
    r"recipients)",
    re.IGNORECASE,
)
_EXIM_DELAY_RE = re.compile(
    r"has not yet been delivered to (?:one or more|the following)", re.IGNORECASE
)
_QMAIL_RE = re.compile(
    r"(?:This is the qmail-send program|I'm afraid I wasn't able to deliver your message"
    r"|Sorry, we were unable to deliver your message|unable to deliver your message to the "
    r"following address)",
    re.IGNORECASE,
)
_SENDMAIL_RE = re.compile(
    r"-{3,}\s*The following addresses had (permanent fatal|transient non-fatal) errors\s*-{3,}"
    r"(.*?)(?:\n\s*\n|-{3,})",
    re.IGNORECASE | re.DOTALL,
)
_EXCHANGE_RE = re.compile(
    r"(?:Delivery has failed to these recipients or groups|Your message (?:to .*? )?"
    r"couldn't be delivered|Diagnostic information for administrators)",
    re.IGNORECASE,
)
_GMAIL_RE = re.compile(
    r"Delivery to the following recipients? failed( permanently)?:", re.IGNORECASE
)


def _indented_blocks(text: str, start: int) -> list[tuple[str, str]]:
    """Exim: ``  address`` lines each followed by more indented reason lines."""
    out: list[tuple[str, str]] = []
    current: str | None = None
    reason: list[str] = []
    for line in text[start:].split("\n"):
        if not line.strip():
            if current is not None and reason:
                out.append((current, " ".join(reason)))
                current, reason = None, []
            continue
        m = re.match(rf"^ {{1,3}}<?({_ADDR})>?(?:\s*$|\s+\((.*)\)\s*$)", line)
        if m:
            if current is not None:
                out.append((current, " ".join(reason)))
            current, reason = m.group(1).lower(), ([m.group(2)] if m.group(2) else [])
            continue
        if current is not None and line.startswith((" ", "\t")):
            reason.append(line.strip())
        elif current is not None:
            out.append((current, " ".join(reason)))
            current, reason = None, []
    if current is not None:
        out.append((current, " ".join(reason)))
    return out


def _angle_blocks(text: str) -> list[tuple[str, str]]:
    """qmail/Yahoo: ``<address>:`` then the reason until a blank line."""
    out = []
    for m in re.finditer(rf"(?m)^<({_ADDR})>:[ \t]*\n?((?:.+\n?)*)", text):
        out.append((m.group(1).lower(), m.group(2).strip()))
    return out


def _exchange_pairs(text: str) -> list[tuple[str, str]]:
    out: dict[str, str] = {}
    for m in re.finditer(
        rf"({_ADDR})\s*(?:\n\s*)*(?:#|Remote Server returned ')"
        r"([45]\d\d[ -][^#'\n]*)",
        text,
    ):
        out[m.group(1).lower()] = m.group(2).strip()
    if not out:
        for m in re.finditer(rf"({_ADDR})\s*\n([^\n]+)", text):
            if "couldn't be found" in m.group(2) or "full" in m.group(2).lower():
                out.setdefault(m.group(1).lower(), m.group(2).strip())
    return list(out.items())


def _first_reply(text: str) -> str | None:
    for line in text.split("\n"):
        m = _REPLY_RE.search(line)
        if m and (_STATUS_RE.search(line) or re.search(r"\b5\d\d\b", line)):
            return line.strip()
    return None


def _analyse_text(msg: Message, text: str) -> BounceReport | None:
    pairs: list[tuple[str, str]] = []
    source = ""
    delayed = False
    if m := _EXIM_DELAY_RE.search(text):
        source, delayed = "exim", True
        pairs = _indented_blocks(text, m.end())
        dm = re.search(r"(?is)Delay reason:\s*(.+?)(?:\n\s*\n|\Z)", text)
        if dm:
            pairs = [(a, r or dm.group(1)) for a, r in pairs]
    elif m := _EXIM_RE.search(text):
        source = "exim"
        pairs = _indented_blocks(text, m.end())
    elif _QMAIL_RE.search(text):
        source = "qmail"
        pairs = _angle_blocks(text)
    elif m := _SENDMAIL_RE.search(text):
        source = "sendmail"
        delayed = m.group(1).lower().startswith("transient")
        addrs = [a.lower() for a in _ADDR_RE.findall(m.group(2))]
        reasons = re.findall(r"\(reason: ([^)]*)\)", m.group(2))
        transcript = re.search(r"(?is)Transcript of session follows\s*-+(.*)", text)
        fallback = _first_reply(transcript.group(1)) if transcript else None
        for i, a in enumerate(dict.fromkeys(addrs)):
            pairs.append((a, reasons[i] if i < len(reasons) else (fallback or "")))
    elif m := _GMAIL_RE.search(text):
        source = "gmail"
        delayed = m.group(1) is None and "temporar" in text.lower()
        addrs = _ADDR_RE.findall(text[m.end() : m.end() + 2000])
        tech = re.search(
            r"(?is)The error that the other server returned was:\s*(.+?)(?:\n\s*\n|\Z)", text
        ) or re.search(
            r"(?is)Technical details of (?:permanent|temporary) failure:\s*(.+?)(?:\n\s*\n|\Z)",
            text,
        )
        reason = tech.group(1) if tech else (_first_reply(text) or "")
        pairs = [(a.lower(), reason) for a in dict.fromkeys(addrs[:1] or addrs)]
    elif _EXCHANGE_RE.search(text):
        source = "exchange"
        pairs = _exchange_pairs(text)
    failed_header = _header(msg, "X-Failed-Recipients")
    if not pairs and failed_header:
        source = source or "generic"
        reply = _first_reply(text)
        pairs = [(a.lower(), reply or "") for a in _ADDR_RE.findall(failed_header)]
    if not pairs and not source:
        return None
    if not pairs:
        pairs = [(a, "") for a in _flufl_addresses(msg)]
    failures = [_failure(a, r or None, action="delayed" if delayed else "failed") for a, r in pairs]
    if not failures:
        return BounceReport(MessageKind.BOUNCE, source, [_failure(None, _first_reply(text))])
    kind = MessageKind.DELAY if delayed else MessageKind.BOUNCE
    return BounceReport(kind, source, failures)


def _flufl_addresses(msg: Message) -> list[str]:
    try:
        from flufl.bounce import all_failures

        temporary, permanent = all_failures(msg)
    except Exception:
        return []
    found = [*permanent, *temporary]
    out = []
    for a in found:
        s = a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a)
        if _ADDR_RE.fullmatch(s):
            out.append(s.lower())
    return sorted(set(out))


# ---------------------------------------------------------------------------- auto-replies
_AUTO_SUBJECT_RE = re.compile(
    r"^(?:auto(?:matic)?[ -]?(?:reply|response|antwort)|out of (?:the )?office|"
    r"autoreply|vacation|abwesenheit|afwezig|absence|automatisch antwoord|"
    r"r[ée]ponse automatique|auto:)",
    re.IGNORECASE,
)


def _auto_reply(msg: Message) -> bool:
    auto = _header(msg, "Auto-Submitted").lower()
    if auto.startswith("auto-replied"):
        return True
    for h in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress-Reply"):
        if msg.get(h) is not None:
            return True
    if _header(msg, "Precedence").lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT_RE.match(_header(msg, "Subject")))


# ------------------------------------------------------------------------------------ entry
def analyse(msg: Message) -> BounceReport:
    """What ``msg`` is, and which recipients failed. Never raises on a malformed message."""
    try:
        report = _analyse(msg)
    except Exception as exc:  # a broken message is a finding, not a crash
        report = BounceReport(MessageKind.NOT_A_BOUNCE, "error", note=f"unreadable: {exc}")
    report.subject = _header(msg, "Subject") or None
    if report.kind in (MessageKind.BOUNCE, MessageKind.DELAY):
        try:
            report.original_message_id = _original_message_id(msg)
        except Exception:
            report.original_message_id = None
    return report


def _analyse(msg: Message) -> BounceReport:
    ctype = msg.get_content_type()
    if ctype == "multipart/report":
        rtype = (msg.get_param("report-type") or "").__str__().lower()
        for part in msg.walk():
            pct = part.get_content_type()
            if pct == "message/feedback-report" or rtype == "feedback-report":
                note = None
                if pct == "message/feedback-report":
                    blocks = _dsn_blocks(part)
                    if blocks:
                        note = _header(blocks[0], "Feedback-Type") or None
                return BounceReport(MessageKind.FEEDBACK_REPORT, "arf", note=note)
            if pct == "message/disposition-notification" or rtype == "disposition-notification":
                return BounceReport(MessageKind.READ_RECEIPT, "mdn")
            if pct in ("message/delivery-status", "message/global-delivery-status"):
                report = _analyse_dsn(msg, part)
                if report.kind is not MessageKind.NOT_A_BOUNCE:
                    return report
                break
    text = _text_parts(msg)
    report_t = _analyse_text(msg, text)
    if report_t is not None:
        return report_t
    if _auto_reply(msg):
        return BounceReport(MessageKind.AUTO_REPLY, "headers", note=_header(msg, "Subject"))
    # last resort: flufl.bounce's heuristics, only for something that looks like a bounce
    sender = _header(msg, "From").lower()
    if re.search(r"mailer-daemon|postmaster|mail delivery", sender) or not _header(
        msg, "Return-Path"
    ).strip("<>"):
        addrs = _flufl_addresses(msg)
        if addrs:
            reply = _first_reply(text)
            return BounceReport(MessageKind.BOUNCE, "flufl", [_failure(a, reply) for a in addrs])
    return BounceReport(MessageKind.NOT_A_BOUNCE, "none")


def parse_bytes(data: bytes) -> Message:
    """Parse one message, bounded: at most :data:`MAX_PARSE_BYTES` (cut at a line end) and at
    most :data:`MAX_MIME_DEPTH` levels deep, else :class:`UnparsableMessage`."""
    if len(data) > MAX_PARSE_BYTES:
        cut = data.rfind(b"\n", 0, MAX_PARSE_BYTES)
        data = data[: cut + 1 if cut > 0 else MAX_PARSE_BYTES]
    if mime_depth(data, stop_above=MAX_MIME_DEPTH) > MAX_MIME_DEPTH:
        raise UnparsableMessage(
            f"MIME parts nested more than {MAX_MIME_DEPTH} levels deep", parse_headers(data)
        )
    try:
        return email.message_from_bytes(data, policy=email.policy.compat32)
    except RecursionError:  # the bound above should make this unreachable
        raise UnparsableMessage("MIME parts nested too deep", parse_headers(data)) from None


def parse_headers(data: bytes) -> Message:
    """The top-level header block (up to the first empty line), at most 64 KB of it."""
    head = data[: 64 * 1024]
    end = len(head)
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = head.find(sep)
        if 0 <= i < end:
            end = i
    return email.message_from_bytes(head[:end] + b"\n\n", policy=email.policy.compat32)


_BOUNDARY_RE = re.compile(rb"""(?i)\bboundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))""")


def mime_depth(data: bytes, *, stop_above: int | None = None) -> int:
    """The deepest MIME nesting of a raw message, in one pass over its lines without parsing.

    Header blocks are read for ``Content-Type`` (a ``boundary`` opens a multipart level until
    its closing delimiter or an outer delimiter; ``message/*`` opens a level whose body starts
    with another header block); a delimiter line of an open boundary closes whatever was
    nested inside it. An estimate that errs on the deep side for broken messages, which is
    what a bound wants. With ``stop_above`` the scan ends as soon as the depth exceeds it.
    """
    stack: list[bytes | None] = []  # a boundary, or None for a message/* level
    in_headers = True
    in_ctype = False
    nested_message = False
    deepest = 0
    where: dict[bytes, int] = {}  # an open boundary -> its innermost position in the stack

    def reindex() -> None:
        where.clear()
        where.update((b, i) for i, b in enumerate(stack) if b is not None)

    for line in data.splitlines():
        if in_headers:
            if not line.strip():
                in_headers = nested_message  # a message/* body starts with headers again
                nested_message = in_ctype = False
                continue
            if line[:1] in (b" ", b"\t"):
                pass  # a folded continuation of the header before
            else:
                in_ctype = line[:13].lower() == b"content-type:"
                if in_ctype and line[13:].lstrip().lower().startswith(b"message/"):
                    stack.append(None)
                    nested_message = True
            if in_ctype:
                m = _BOUNDARY_RE.search(line)
                if m:
                    boundary = m.group(1) or m.group(2)
                    where[boundary] = len(stack)
                    stack.append(boundary)
            deepest = max(deepest, len(stack))
            if stop_above is not None and deepest > stop_above:
                return deepest
            continue
        if line.startswith(b"--") and where:
            body = line[2:].rstrip()
            if body in where:
                del stack[where[body] + 1 :]
                reindex()
                in_headers = True
            elif body.endswith(b"--") and body[:-2] in where:
                del stack[where[body[:-2]] :]
                reindex()
    return deepest
