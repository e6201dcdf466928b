"""Extra ``postwatch check-config`` checks of the delivery settings: ``check`` lists
combinations that are certainly wrong (they fail the check; a form without fallback recipients
is allowed), ``warnings`` set-ups that work but lose news (printed, the check still passes)."""

from __future__ import annotations

from postwatch.config import Config


def check(cfg: Config) -> list[str]:
    d = cfg.delivery
    problems: list[str] = []
    if d.lease < cfg.smtp.timeout * 4:
        problems.append(
            f"delivery.lease ({d.lease}) should be at least 4 x smtp.timeout ({cfg.smtp.timeout}):"
            " a send still in progress when its lease ends may be sent again by another worker"
        )
    if d.retry_base > d.retry_max:
        problems.append(f"delivery.retry_base ({d.retry_base}) exceeds retry_max ({d.retry_max})")
    if d.full_retry_every > d.full_horizon:
        problems.append(
            f"delivery.full_retry_every ({d.full_retry_every}) exceeds full_horizon "
            f"({d.full_horizon}): a full mailbox would be tried only once"
        )
    if cfg.smtp.password is not None and not cfg.smtp.username:
        problems.append("smtp: a password is given but no username")
    return problems


def warnings(cfg: Config) -> list[str]:
    """A relay (``final = false``) whose later bounces nobody reads: neither a followed mail
    log nor a watched bounce mailbox. The lead then shows "delivered" (handed over) while the
    mailbox refused it after the 250, and no fallback copy goes out."""
    if not any(a.forms for a in cfg.accounts) or cfg.smtp.final:
        return []
    if cfg.maillogs or cfg.syslog is not None or cfg.bounce_mailboxes:
        return []
    return [
        "smtp.final = false and neither a followed mail log ([[maillogs]] or [syslog]) nor a "
        "bounce mailbox ([[bounce_mailboxes]]): bounces after the relay's 250 go unseen (the "
        "lead shows delivered, no fallback copy is sent). Follow the relay's log, watch the "
        "mailbox of smtp.sender, or point [smtp] at a listener that refuses at RCPT and set "
        "final = true (docs/delivery.md)"
    ]
