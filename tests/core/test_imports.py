"""The architecture as a checked contract: the import-linter contracts of pyproject.toml hold
(feature rooms independent of each other, no room or kernel module importing the CLI edge,
the kernel importing no room, the parsers importing nothing of the store)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports() -> str:
    beside = Path(sys.executable).parent / "lint-imports"
    found = str(beside) if beside.exists() else shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports is missing: pip install -e '.[test]' installs import-linter")
    return found


def test_import_contracts_hold() -> None:
    r = subprocess.run(
        [_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]
    assert "Contracts: 4 kept, 0 broken." in r.stdout, r.stdout[-3000:]
