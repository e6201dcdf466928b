"""Extra ``postwatch check-config`` problems of the intake's settings."""

from __future__ import annotations

import ipaddress

from postwatch.config import Config
from postwatch.intake.spam import normalise_origin


def check(cfg: Config) -> list[str]:
    problems: list[str] = []
    for i, entry in enumerate(cfg.server.trusted_proxies):
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            problems.append(f"server.trusted_proxies[{i}]: not an IP address or network: {entry!r}")
    for ai, a in enumerate(cfg.accounts):
        for fi, f in enumerate(a.forms):
            where = f"accounts[{ai}].forms[{fi}]"
            for oi, origin in enumerate(f.allowed_origins):
                o = origin.strip()
                if o != "*" and "://" in o and normalise_origin(o) is None:
                    problems.append(f"{where}.allowed_origins[{oi}]: not an origin: {origin!r}")
            if f.redirect and not f.redirect.startswith(("https://", "http://", "/")):
                problems.append(f"{where}.redirect: must be an http(s) URL or a path")
            trap = f.honeypot_field or cfg.intake.honeypot_field
            if trap and trap == f.email_field:
                problems.append(f"{where}.honeypot_field: the same as email_field ({trap!r})")
    return problems
