"""Fixtures of the downstream tests: the aiosmtpd sink of the delivery tests and the mail stack."""

from tests.delivery.conftest import smtp_sink
from tests.mailstack import mailstack, mailstack_factory

__all__ = ["mailstack", "mailstack_factory", "smtp_sink"]
