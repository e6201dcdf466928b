"""Background services of the bounces room: one IMAP IDLE watch per ``[[bounce_mailboxes]]``."""

from __future__ import annotations

from postwatch.bounces.imap import build_bounce_services
from postwatch.config import Config
from postwatch.rooms import Service
from postwatch.store import Database


def build_services(config: Config, db: Database) -> list[Service]:
    return list(build_bounce_services(config, db))
