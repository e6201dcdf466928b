"""Who is responsible for what, who is next when nobody reacts, and which channels are safe.

Concerns: ``mailbox`` (quota and delivery of a watched mailbox), ``site`` (hosting space),
``lead_flow`` (form sign-ups not arriving), ``probes`` (canary probes), ``monitoring``
(postwatch's own sources, e.g. a quota source that cannot be read). An account maps a concern
to roles in ``responsibilities``; what it leaves out comes from ``DEFAULT_RESPONSIBILITIES``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from postwatch.alerts.channels import ChannelInfo, broken_path, describe
from postwatch.config import AccountConfig, Config, ContactConfig

CONCERNS = ("mailbox", "site", "lead_flow", "probes", "monitoring")

#: a hoster's sensible defaults: the customer acts on their own mailbox and leads, the
#: webmaster on the site's space, the hoster on probes and on postwatch's own sources.
DEFAULT_RESPONSIBILITIES: dict[str, list[str]] = {
    "mailbox": ["owner"],
    "site": ["webmaster"],
    "lead_flow": ["owner", "webmaster"],
    "probes": ["hoster"],
    "monitoring": ["hoster"],
}

CONCERN_TEXT = {
    "en": {
        "mailbox": "mailbox quota and delivery",
        "site": "website hosting space",
        "lead_flow": "form sign-ups arriving",
        "probes": "test messages (probes)",
        "monitoring": "the monitoring itself",
    },
    "nl": {
        "mailbox": "mailboxruimte en bezorging",
        "site": "webruimte van de website",
        "lead_flow": "aanmeldingen via formulieren",
        "probes": "testberichten (probes)",
        "monitoring": "de bewaking zelf",
    },
}


def responsibilities(account: AccountConfig) -> dict[str, list[str]]:
    """The account's matrix: its own entries over the defaults; extra concerns kept."""
    out = {c: list(r) for c, r in DEFAULT_RESPONSIBILITIES.items()}
    out.update({c: list(r) for c, r in account.responsibilities.items()})
    return out


def contact_key(account: AccountConfig, contact: ContactConfig) -> str:
    """One person across accounts when an e-mail is given, else account/name."""
    if contact.email:
        return f"email:{contact.email}"
    return f"{account.id}/{contact.name}"


def channels_hash(contact: ContactConfig) -> str:
    h = hashlib.sha256()
    for ch in contact.channels:
        h.update(ch.get_secret_value().encode() + b"\0")
    return h.hexdigest()[:12]


def ladder(config: Config, account: AccountConfig, concern: str) -> list[list[str]]:
    """Roles per escalation level: level 0 = the responsible roles, then along ``escalation``.

    Roles without a contact in the account are passed over, so an escalation always reaches
    someone new while there is anyone left.
    """
    present = {c.role for c in account.contacts}
    wanted = responsibilities(account).get(concern, ["owner"])
    first = [r for r in wanted if r in present]
    chain = config.alerts.escalation
    levels: list[list[str]] = [first] if first else []
    seen = set(first)
    # escalation goes on from the highest responsible role, even when nobody has that role
    start = max((chain.index(r) for r in wanted if r in chain), default=-1)
    for role in chain[start + 1 :]:
        if role in present and role not in seen:
            levels.append([role])
            seen.add(role)
    if not levels and present:  # nobody is responsible: tell everyone rather than no one
        levels.append(sorted(present))
    return levels


def contacts_for_level(
    config: Config, account: AccountConfig, concern: str, level: int
) -> list[ContactConfig]:
    levels = ladder(config, account, concern)
    if level >= len(levels):
        return []
    roles = set(levels[level])
    return [c for c in account.contacts if c.role in roles]


@dataclass(frozen=True)
class Avoid:
    """What a notification must not go through."""

    addresses: frozenset[str]
    domains: frozenset[str]

    def reason(self, info: ChannelInfo) -> str:
        return broken_path(info, set(self.addresses), set(self.domains))


def avoid_for(account: AccountConfig, subject: str, concern: str, failing: set[str]) -> Avoid:
    """Never through the broken path.

    For an alert about a mailbox: never to that mailbox and never to any address on its domain
    or through its domain's mail server (the server that refuses it). Always: never to any of
    the account's mailboxes that are failing or full right now (``failing``).
    """
    addresses = {a.lower() for a in failing}
    domains: set[str] = set()
    if concern == "mailbox" and "@" in subject:
        addresses.add(subject.lower())
        domains.add(subject.lower().rpartition("@")[2])
    for addr in failing:
        domains.add(addr.lower().rpartition("@")[2])
    return Avoid(frozenset(addresses), frozenset(domains))


def own_mail_path(account: AccountConfig) -> Avoid:
    """The account's own mailboxes and their domains (for check-config)."""
    addrs = {m.address.lower() for m in account.mailboxes}
    return Avoid(frozenset(addrs), frozenset(a.rpartition("@")[2] for a in addrs))


def contact_channels(contact: ContactConfig) -> list[ChannelInfo]:
    return [describe(c.get_secret_value(), i) for i, c in enumerate(contact.channels)]
