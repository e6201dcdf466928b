"""Notification channels: Apprise URLs, masked for display, checked against the broken path.

A channel is any Apprise URL (``mailto://``, ``json://``, ``tgram://``, ``ntfy://``, ...). The
raw URL holds secrets; everything that leaves this module for a person or the store is
``mask()``-ed: Apprise's own privacy form, plus any query value whose name looks secret.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import apprise

_SECRET_KEYS = re.compile(r"(token|key|secret|pass|pwd|auth|sig|session|cookie)", re.IGNORECASE)
_EMAIL_IN = re.compile(r"[^@\s/<>,;:'\"]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
#: the warnings of the send() in progress in this context (thread or Apprise worker)
_capture: ContextVar[list[str] | None] = ContextVar("postwatch_apprise_capture", default=None)
_DEFAULTS = {
    "overflow": "upstream",
    "retry": "0",
    "wait": "0.5",
    "optional": "no",
    "method": "POST",
    "cto": "15.0",
}


@dataclass(frozen=True)
class ChannelInfo:
    """What postwatch needs to know about one channel without holding on to its secrets."""

    index: int
    masked: str
    valid: bool
    scheme: str
    #: e-mail recipients of an e-mail channel (lower case), empty for other channels
    recipients: frozenset[str] = field(default_factory=frozenset)
    #: the SMTP server an e-mail channel sends through (lower case), if any
    smtp_host: str | None = None
    error: str | None = None


_loaded = False
_load_lock = threading.Lock()
#: secret pieces of every channel URL seen in this process, longest first (replaced whole,
#: never changed in place, so readers in other threads always see a complete tuple)
_known_secrets: tuple[str, ...] = ()
_secrets_lock = threading.Lock()


def _remember(url: str, masked: str) -> None:
    global _known_secrets
    new = set(secret_fragments(url, masked)) - set(_known_secrets)
    if new:
        with _secrets_lock:
            merged = set(_known_secrets) | new
            _known_secrets = tuple(sorted(merged, key=len, reverse=True))


def scrub(text: str) -> str:
    """Replace every known channel secret in ``text`` with ****."""
    for frag in _known_secrets:
        if frag in text:
            text = text.replace(frag, "****")
    return text


_local = threading.local()


class _Scrubber(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_local, "quiet", False):
            return False  # parsing a URL whose secrets are not known yet
        msg = record.getMessage()
        clean = scrub(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


_scrubber = _Scrubber()


class _Collector(logging.Handler):
    """Hands Apprise's warnings to the send() whose context they were logged in."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        buf = _capture.get()
        if buf is not None:
            buf.append(scrub(record.getMessage()))


_collector = _Collector()


def _load_plugins() -> None:
    """Apprise loads its plug-ins on first use; some import modules that warn (imghdr)."""
    global _loaded
    with _load_lock:
        if _loaded:
            return
        # Apprise's own log lines can hold secrets (custom headers, tokens in paths at DEBUG):
        # a filter on its logger scrubs every secret of every channel postwatch has seen.
        logging.getLogger("apprise").addFilter(_scrubber)
        logging.getLogger("apprise").addHandler(_collector)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            apprise.Apprise.instantiate("json://localhost", suppress_exceptions=True)
        _loaded = True


def _instantiate(url: str) -> Any:
    if not _loaded:
        _load_plugins()
    _local.quiet = True
    try:
        return apprise.Apprise.instantiate(url, suppress_exceptions=True)
    finally:
        _local.quiet = False


def _fallback_mask(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://****@{host}/..." if parts.scheme else "****"


def mask(url: str, plugin: Any | None = None) -> str:
    """The URL as it may be shown or stored: no password, token or secret query value."""
    obj = plugin if plugin is not None else _instantiate(url)
    if obj is None:
        return _fallback_mask(url)
    try:
        shown = str(obj.url(privacy=True))
    except Exception:
        return _fallback_mask(url)
    base, sep, query = shown.partition("?")
    base = _mask_path(base)
    if not sep:
        return base
    if not query:
        return base
    kept = []
    for k, v in parse_qsl(query, keep_blank_values=True):
        if _DEFAULTS.get(k) == v:
            continue  # Apprise's defaults only make the URL harder to read
        if _SECRET_KEYS.search(k) or k.startswith(("+", "-")):
            v = "****"  # +header and -payload values of webhooks can carry tokens
        kept.append(f"{quote(k, safe='+-_.')}={quote(v, safe='*@.-_:')}")
    return base + ("?" + "&".join(kept) if kept else "")


#: webhook schemes whose path is an address that often holds a secret (/hooks/SECRET)
_PATH_SECRET_SCHEMES = ("json", "jsons", "xml", "xmls", "form", "forms")
_SECRETISH = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_\-]{16,}$")


def _mask_path(base: str) -> str:
    """A webhook's path keeps its first segment (``/hooks``); the rest is masked. Elsewhere a
    segment that looks like a token (16+ letters and digits) is masked."""
    scheme, sep, rest = base.partition("://")
    if not sep or "/" not in rest:
        return base
    netloc, _, path = rest.partition("/")
    segs = path.split("/")
    out = []
    for i, seg in enumerate(segs):
        if seg and (
            (scheme.lower() in _PATH_SECRET_SCHEMES and i > 0) or _SECRETISH.match(seg)
        ):
            out.append("****")
        else:
            out.append(seg)
    return f"{scheme}://{netloc}/" + "/".join(out)


def secret_fragments(url: str, masked: str) -> list[str]:
    """Pieces of the raw URL that the masked form hides: scrubbed from any error text."""
    pieces = {p for p in re.split(r"[/:@?&=,#]+", url) if len(p) >= 4}
    parts = urlsplit(url)
    if parts.password:
        pieces.add(parts.password)
    return sorted((p for p in pieces if p not in masked), key=len, reverse=True)


def _emails(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, str):
        found.update(m.lower() for m in _EMAIL_IN.findall(value))
    elif isinstance(value, list | tuple | set):
        for v in value:
            found |= _emails(v)
    return found


def describe(url: str, index: int = 0) -> ChannelInfo:
    obj = _instantiate(url)
    scheme = urlsplit(url).scheme.lower()
    if obj is None:
        return ChannelInfo(
            index, _fallback_mask(url), False, scheme, error="not an Apprise URL it can use"
        )
    recipients: set[str] = set()
    smtp_host: str | None = None
    targets = getattr(obj, "targets", None)
    if targets is not None:
        recipients = _emails(list(targets))
    if hasattr(obj, "smtp_host"):  # Apprise's e-mail plug-in
        smtp_host = (getattr(obj, "smtp_host", None) or getattr(obj, "host", None) or "").lower()
        if not recipients:
            recipients = _emails(getattr(obj, "from_addr", None))
    shown = mask(url, obj)
    _remember(url, shown)
    return ChannelInfo(
        index,
        shown,
        True,
        scheme,
        frozenset(recipients),
        smtp_host or None,
    )


def broken_path(info: ChannelInfo, avoid_addresses: set[str], avoid_domains: set[str]) -> str:
    """Why this channel would go through the broken path ('' when it does not)."""
    for rcpt in sorted(info.recipients):
        if rcpt in avoid_addresses:
            return f"it would go to {rcpt}, the mailbox that is failing"
        domain = rcpt.rpartition("@")[2]
        if domain in avoid_domains:
            return f"it would go to {rcpt}, on {domain} whose mail server is failing"
    if info.smtp_host:
        for d in avoid_domains:
            if info.smtp_host == d or info.smtp_host.endswith("." + d):
                return f"it would be sent through {info.smtp_host}, the failing mail server"
    return ""


#: alert severity -> Apprise's notification type (a JSON webhook's ``"type"``)
NOTIFY_TYPES = {"critical": "failure", "warning": "warning", "low": "info", "resolved": "success"}


def send(
    url: str, title: str, body: str, *, severity: str = "low"
) -> tuple[bool, str | None]:
    """Send one message on one channel. Returns (ok, error); the error text is masked.

    ``severity``: the alert's severity, or "resolved" for the good news: it becomes the
    notification type (``"type": "failure"`` in a JSON webhook body for a critical alert).

    Safe to call from several threads at once: Apprise's warnings for this call are collected
    through a context variable (Apprise copies the context into its worker threads).
    """
    obj = _instantiate(url)
    shown = mask(url, obj)
    _remember(url, shown)
    if obj is None:
        return False, f"not an Apprise URL it can use: {shown}"
    ap = apprise.Apprise()
    ap.add(obj)
    lines: list[str] = []
    token = _capture.set(lines)
    try:
        ok = bool(
            ap.notify(
                title=title,
                body=body,
                body_format=apprise.NotifyFormat.TEXT,
                notify_type=NOTIFY_TYPES.get(severity, "info"),
            )
        )
    except Exception as exc:  # a plug-in that raises instead of reporting
        ok = False
        lines.append(f"{type(exc).__name__}: {exc}")
    finally:
        _capture.reset(token)
    if ok:
        return True, None
    error = scrub("; ".join(lines[-3:]) or "the channel reported a failure")
    return False, error[:500]
