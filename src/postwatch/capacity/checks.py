"""check-config: quota sources and sites that cannot work as configured."""

from __future__ import annotations

import shutil
from pathlib import Path

from postwatch.config import Config, resolve_path


def check(cfg: Config) -> list[str]:
    problems: list[str] = []
    hooked = any(box.quota for _acc, box in cfg.mailboxes())
    if hooked and cfg.server.trusted_proxies and cfg.capacity.hook_token is None:
        problems.append(
            "capacity.hook_token: server.trusted_proxies is set, so the quota-warning hook "
            "(POST /capacity/hook/quota-warning) refuses every request without a token (a "
            "proxy on this host makes anyone a loopback peer); set capacity.hook_token"
        )
    for acc in cfg.accounts:
        for box in acc.mailboxes:
            q = box.quota
            if q is None:
                continue
            where = f"accounts[{acc.id}].mailboxes[{box.address}].quota"
            if q.source == "imap" and q.password is None:
                problems.append(
                    f"{where}: an imap source needs password, password_env or password_file"
                )
            if q.source == "doveadm":
                if q.doveadm_url is None and shutil.which("doveadm") is None:
                    problems.append(
                        f"{where}: doveadm is not installed here; set doveadm_url "
                        "to use Dovecot's HTTP API"
                    )
                if q.doveadm_url is not None and not q.doveadm_url.startswith(
                    ("http://", "https://")
                ):
                    problems.append(f"{where}.doveadm_url: must start with http:// or https://")
                if q.doveadm_config is not None and not Path(q.doveadm_config).is_file():
                    problems.append(f"{where}.doveadm_config: {q.doveadm_config} not found")
            if q.source == "maildir" and q.path is not None and not Path(q.path).is_dir():
                problems.append(f"{where}.path: {q.path} is not a folder")
        for i, site in enumerate(acc.sites):
            root = resolve_path(cfg, site.root)
            if not root.is_dir():
                problems.append(f"accounts[{acc.id}].sites[{i}].root: {root} is not a folder")
    return problems
