"""Sending one message to one recipient over SMTP (smtplib, run in a worker thread).

The outcome is a :class:`Reply` whose :class:`~postwatch.reasons.Verdict` comes from the one
taxonomy in :mod:`postwatch.reasons`. Only the answers to ``RCPT TO`` and to the end of ``DATA``
speak about the recipient; a problem before that (connection refused or dropped, timeout, TLS,
authentication, the server refusing our sender) is about postwatch's own relay and is treated as
*temporary* whatever its code: a wrong SMTP password must not fail every lead for good. Such a
job retries with backoff until ``delivery.give_up_after`` and then goes to the fallback.

The password is a ``SecretStr`` and is only revealed in the call to ``smtp.login``; error texts
from the server are kept, but never the credentials.

Envelope options, each only when the server offers the extension in its EHLO answer:

- ``SIZE=n`` on ``MAIL FROM`` (RFC 1870), always: a server that checks the quota at RCPT (Postfix
  with Dovecot's quota-status policy) compares that size with the room left, so a mailbox that
  is exactly full is refused at RCPT instead of accepted and bounced after the 250.
- ``NOTIFY=`` on ``RCPT TO`` (RFC 3461 DSN) as :func:`dsn_request` decides: ``NEVER`` where
  postwatch learns the outcome without a bounce notice, else ``FAILURE`` with ``RET=HDRS`` on
  ``MAIL FROM`` (the notice carries the headers, with the Message-ID, not the lead's text).
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from enum import StrEnum

from postwatch.config import Config, SmtpConfig
from postwatch.reasons import Reason, Verdict, classify_smtp_reply


@dataclass(frozen=True)
class Reply:
    """The answer that decided the attempt. ``code`` is None when no SMTP answer came."""

    delivered: bool
    code: int | None
    text: str
    verdict: Verdict | None  # None when delivered
    stage: str  # connect | tls | auth | mail | rcpt | data | done

    @property
    def line(self) -> str:
        return f"{self.code} {self.text}" if self.code is not None else self.text


class Notify(StrEnum):
    """The bounce notices postwatch asks a DSN-capable server for (RFC 3461 ``NOTIFY``)."""

    NEVER = "NEVER"  # the outcome is learned otherwise: no notice to the sender address
    FAILURE = "FAILURE"  # a notice only if the mail finally fails (no "delayed" notices)


def dsn_request(config: Config, *, held_retry: bool) -> Notify:
    """Which bounce notices one send asks for (docs/delivery.md, "Bounce notices").

    A bounce notice is needed only where it is postwatch's one witness of what happened after
    the 250: ``[smtp] final = false``, no followed mail log (``[[maillogs]]`` or ``[syslog]``)
    and a watched bounce mailbox that reads it. A held job's retry asks for none in every other
    case; the first hand-over of a lead also gets one when a bounce mailbox is watched next to
    the log (a second witness, read by postwatch, not by a person).
    """
    log_followed = bool(config.maillogs) or config.syslog is not None
    bounces_read = bool(config.bounce_mailboxes)
    if config.smtp.final:
        return Notify.NEVER  # the reply is the outcome
    if held_retry:
        return Notify.FAILURE if bounces_read and not log_followed else Notify.NEVER
    if log_followed and not bounces_read:
        return Notify.NEVER
    return Notify.FAILURE


def _decode(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())[:1000]


def _network(text: str, stage: str) -> Reply:
    verdict = Verdict(reason=Reason.NETWORK, permanent=False, status=None, code=None)
    return Reply(False, None, text[:1000], verdict, stage)


def _answer(code: int, raw: bytes | str, stage: str) -> Reply:
    text = _decode(raw)
    verdict = classify_smtp_reply(code, text)
    if stage not in ("rcpt", "data") and verdict.permanent:
        # about our relay, not about the recipient: retry (until give_up_after)
        verdict = Verdict(
            reason=verdict.reason, permanent=False, status=verdict.status, code=verdict.code
        )
    return Reply(False, code, text, verdict, stage)


def tls_context(cfg: SmtpConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
    return ctx


def send(
    cfg: SmtpConfig, msg: EmailMessage, sender: str, recipient: str,
    notify: Notify | None = None,
) -> Reply:
    """Send ``msg`` to exactly one envelope recipient; never raises for SMTP/network trouble.

    ``notify``: the bounce notices to ask for where the server offers DSN (None: the server's
    default)."""
    timeout = cfg.timeout.total_seconds()
    stage = "connect"
    smtp: smtplib.SMTP | None = None
    answered = False  # the server answers: a polite QUIT is possible
    try:
        if cfg.security == "tls":
            smtp = smtplib.SMTP_SSL(
                cfg.host, cfg.port, local_hostname=cfg.helo, timeout=timeout,
                context=tls_context(cfg),
            )
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, local_hostname=cfg.helo, timeout=timeout)
        answered = True
        smtp.ehlo_or_helo_if_needed()
        if cfg.security == "starttls":
            stage = "tls"
            code, raw = smtp.starttls(context=tls_context(cfg))
            if code != 220:
                return _answer(code, raw, stage)
            smtp.ehlo()
        if cfg.username:
            stage = "auth"
            password = cfg.password.get_secret_value() if cfg.password else ""
            smtp.login(cfg.username, password)
        stage = "mail"
        data = msg.as_bytes(policy=msg.policy)  # policy SMTP: CRLF, the size on the wire
        options = ["SMTPUTF8"] if smtp.has_extn("smtputf8") and not sender.isascii() else []
        if smtp.has_extn("size"):
            options.append(f"SIZE={len(data)}")
        rcpt_options: list[str] = []
        if notify is not None and smtp.has_extn("dsn"):
            rcpt_options.append(f"NOTIFY={notify.value}")
            if notify is not Notify.NEVER:
                options.append("RET=HDRS")
        code, raw = smtp.mail(sender, options)
        if code != 250:
            return _answer(code, raw, stage)
        stage = "rcpt"
        code, raw = smtp.rcpt(recipient, rcpt_options)
        if code not in (250, 251):
            return _answer(code, raw, stage)
        stage = "data"
        code, raw = smtp.data(data)
        if code != 250:
            return _answer(code, raw, stage)
        return Reply(True, code, _decode(raw), None, "done")
    except smtplib.SMTPResponseException as exc:
        answered = exc.smtp_code != 421
        return _answer(exc.smtp_code, exc.smtp_error, stage)
    except smtplib.SMTPServerDisconnected as exc:
        answered = False
        return _network(f"connection closed during {stage}: {exc}".strip(), stage)
    except smtplib.SMTPNotSupportedError as exc:
        answered = False
        return _network(f"server does not support {stage}: {exc}", stage)
    except TimeoutError:
        answered = False
        return _network(f"timeout after {timeout:g}s during {stage}", stage)
    except ssl.SSLError as exc:
        answered = False
        return _network(f"TLS error during {stage}: {exc.reason or exc}", stage)
    except OSError as exc:
        answered = False
        return _network(f"{type(exc).__name__} during {stage}: {exc.strerror or exc}", stage)
    except smtplib.SMTPException as exc:
        answered = False
        return _network(f"SMTP error during {stage}: {exc}", stage)
    finally:
        if smtp is not None:
            try:
                if answered:
                    smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            smtp.close()


def probe(cfg: SmtpConfig) -> Reply:
    """Connect, EHLO, STARTTLS/TLS and AUTH as configured, then QUIT: nothing is sent.
    ``delivered`` is True when every step worked."""
    timeout = cfg.timeout.total_seconds()
    stage = "connect"
    smtp: smtplib.SMTP | None = None
    try:
        if cfg.security == "tls":
            smtp = smtplib.SMTP_SSL(
                cfg.host, cfg.port, local_hostname=cfg.helo, timeout=timeout,
                context=tls_context(cfg),
            )
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, local_hostname=cfg.helo, timeout=timeout)
        code, raw = smtp.ehlo()
        if cfg.security == "starttls":
            stage = "tls"
            code, raw = smtp.starttls(context=tls_context(cfg))
            if code != 220:
                return _answer(code, raw, stage)
            code, raw = smtp.ehlo()
        if cfg.username:
            stage = "auth"
            password = cfg.password.get_secret_value() if cfg.password else ""
            code, raw = smtp.login(cfg.username, password)
        return Reply(True, code, _decode(raw), None, "done")
    except smtplib.SMTPResponseException as exc:
        return _answer(exc.smtp_code, exc.smtp_error, stage)
    except TimeoutError:
        return _network(f"timeout after {timeout:g}s during {stage}", stage)
    except ssl.SSLError as exc:
        return _network(f"TLS error during {stage}: {exc.reason or exc}", stage)
    except (OSError, smtplib.SMTPException) as exc:
        return _network(f"{type(exc).__name__} during {stage}: {exc}", stage)
    finally:
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            smtp.close()
