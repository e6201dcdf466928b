"""check-config: problems in the responsibility matrix and the contacts' channels."""

from __future__ import annotations

from postwatch.alerts import routing
from postwatch.config import Config


def check(cfg: Config) -> list[str]:
    problems: list[str] = []
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
