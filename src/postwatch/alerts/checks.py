"""check-config: problems in the responsibility matrix, the contacts' channels and API tokens."""

from __future__ import annotations

from postwatch.alerts import routing
from postwatch.config import Config

#: an account's API token shorter than this is reported (it could be guessed)
MIN_TOKEN_CHARS = 16


def _token_problems(cfg: Config) -> list[str]:
    """Account API tokens: one token for several accounts (or the operator's) lets one
    customer read another's alerts, so it is a problem; the tokens themselves are never shown."""
    problems: list[str] = []
    owners: dict[str, list[str]] = {}
    if cfg.alerts.api_token is not None:
        owners.setdefault(cfg.alerts.api_token.get_secret_value().strip(), []).append(
            "alerts.api_token"
        )
    for acc in cfg.accounts:
        if acc.api_token is None:
            continue
        value = acc.api_token.get_secret_value().strip()
        owners.setdefault(value, []).append(f"accounts[{acc.id}].api_token")
        if len(value) < MIN_TOKEN_CHARS:
            problems.append(
                f"accounts[{acc.id}].api_token: shorter than {MIN_TOKEN_CHARS} characters; "
                "use a long random one (e.g. openssl rand -hex 32)"
            )
    for names in owners.values():
        if len(names) > 1:
            problems.append(
                f"{', '.join(names)}: the same token; each account needs its own (the API "
                "refuses a token that is not unique)"
            )
    return problems


def check(cfg: Config) -> list[str]:
    problems: list[str] = _token_problems(cfg)
    for acc in cfg.accounts:
        if not acc.contacts:
            continue  # alerts not set up for this account (postwatch alerts list still shows)
        where = f"accounts[{acc.id}]"
        own = routing.own_mail_path(acc)
        for c in acc.contacts:
            infos = routing.contact_channels(c)
            for info in infos:
                if not info.valid:
                    problems.append(
                        f"{where}.contacts[{c.name}].channels[{info.index}]: {info.masked}: "
                        f"{info.error}"
                    )
            if not c.channels:
                problems.append(f"{where}.contacts[{c.name}]: no channels")
        owners = [c for c in acc.contacts if c.role == "owner"]
        for c in owners:
            infos = [i for i in routing.contact_channels(c) if i.valid]
            if infos and not any(not own.reason(i) for i in infos):
                problems.append(
                    f"{where}: owner {c.name} has no channel that avoids the account's own "
                    f"mailboxes ({', '.join(sorted(own.addresses))}); a full mailbox would "
                    "silence every alert about it. Add a channel elsewhere (another mail "
                    "server, SMS, a chat or a webhook)."
                )
        roles = {c.role for c in acc.contacts}
        for concern, wanted in acc.responsibilities.items():
            if not any(r in roles for r in wanted):
                problems.append(
                    f"{where}.responsibilities.{concern}: no contact has role "
                    f"{' or '.join(wanted)}"
                )
    return problems


def warnings(cfg: Config) -> list[str]:
    """An account with forms or watched mailboxes but no contact with a channel: postwatch
    keeps its leads, but nobody hears that mail stopped arriving."""
    out: list[str] = []
    for acc in cfg.accounts:
        if (acc.forms or acc.mailboxes) and not any(c.channels for c in acc.contacts):
            out.append(
                f"accounts[{acc.id}]: nobody will be told when its mail stops arriving: no "
                "contact with a channel ([[accounts.contacts]], docs/CONFIG.md)"
            )
    return out
