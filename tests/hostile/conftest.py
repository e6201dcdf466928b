"""Fixtures for the hostile-input suite: the real mail stack (the stores come from the root)."""

from tests.mailstack import mailstack, mailstack_factory

__all__ = ["mailstack", "mailstack_factory"]
