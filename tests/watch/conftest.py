"""Fixtures for the delivery watch tests: the real mail stack."""

from tests.mailstack import mailstack, mailstack_factory

__all__ = ["mailstack", "mailstack_factory"]
