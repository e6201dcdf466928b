"""Alembic environment: run with a connection handed over by ``Database.migrate()``."""

from __future__ import annotations

from alembic import context

import postwatch.store.models

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through Database.migrate()
    raise RuntimeError("run migrations through postwatch (Database.migrate)")

context.configure(
    connection=connection,
    target_metadata=postwatch.store.models.Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
