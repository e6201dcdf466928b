"""Small builders for the capacity tests: real files, real Maildirs, real WordPress-like trees."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from postwatch.config import Config, config_from_dict


def write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(b"x" * size)
    return path


def make_maildir(root: Path, messages: dict[str, list[int]], *, size_in_name: bool = True) -> int:
    """Create a Maildir with ``{folder: [sizes]}`` ("" = INBOX); returns the total bytes."""
    total = 0
    n = 0
    for folder, sizes in messages.items():
        base = root / folder if folder else root
        for sub in ("cur", "new", "tmp"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        for size in sizes:
            n += 1
            name = f"1700000000.M{n}P1.host"
            if size_in_name:
                name += f",S={size},W={size + 10}"
            sub = "cur" if n % 2 else "new"
            write(base / sub / (name + (":2,S" if sub == "cur" else "")), size)
            total += size
    return total


def capacity_config(
    tmp_path: Path,
    mailboxes: list[dict[str, Any]] | None = None,
    sites: list[dict[str, Any]] | None = None,
    **capacity: Any,
) -> Config:
    data: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:1"},
        "database": {"url": f"sqlite:///{tmp_path / 'postwatch.db'}"},
        "accounts": [
            {
                "id": "gym",
                "forms": [{"id": "contact", "recipients": ["info@gym.example"]}],
                "mailboxes": mailboxes or [{"address": "info@gym.example"}],
                "sites": sites or [],
            },
            {
                "id": "bakery",
                "mailboxes": [{"address": "shop@bakery.example"}],
            },
        ],
        "capacity": capacity,
    }
    return config_from_dict(data, tmp_path / "postwatch.toml")


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.lstat(p).st_size
    return total
