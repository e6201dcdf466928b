"""Extra ``postwatch check-config`` checks of the delivery settings (combinations that are
certainly wrong; a form without fallback recipients is allowed)."""

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
