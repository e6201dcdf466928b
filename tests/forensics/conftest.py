"""Fixtures for ``postwatch investigate``: the gym incident logs, rotated and partly gzipped."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

LOGS = Path(__file__).parent.parent / "fixtures" / "logs"


@pytest.fixture
def gym(tmp_path: Path) -> Path:
    """The gym incident: Postfix mail.log rotated (oldest gzipped), vhost access logs."""
    d = tmp_path / "logs"
    d.mkdir()
    src = LOGS / "gym"
    for name in ("mail.log", "mail.log.1", "other_vhosts_access.log"):
        shutil.copy(src / name, d / name)
    for name in ("mail.log.2", "other_vhosts_access.log.1"):
        with open(src / name, "rb") as fin, gzip.open(d / f"{name}.gz", "wb") as fout:
            shutil.copyfileobj(fin, fout)
    return d
