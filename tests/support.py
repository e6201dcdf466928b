"""Shared test fixtures.

Tests that need a real service (PostgreSQL, Postfix, Dovecot, Chromium) call ``require()``:
on a laptop without the service they skip; with ``POSTWATCH_REQUIRE_ALL=1`` (set by ``.ci/run``)
the same situation is a failure, so CI can never go green by skipping.
"""

from __future__ import annotations

import os

import pytest


def require(condition: bool, what: str) -> None:
    """Skip (or, in CI, fail) when a real service the test needs is missing."""
    if condition:
        return
    if os.environ.get("POSTWATCH_REQUIRE_ALL") == "1":
        pytest.fail(f"required in CI but missing: {what}")
    pytest.skip(f"missing: {what}")
