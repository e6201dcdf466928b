"""The store: the only place that writes SQL. See db.py, models.py and events.py."""

from postwatch.store.db import Database, StoreUnavailable, database_from_config

__all__ = ["Database", "StoreUnavailable", "database_from_config"]
