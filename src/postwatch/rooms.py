"""Discovery of the rooms' plug-in points, so the edges (cli.py, app.py) stay thin.

Each room may provide, all optional:
- ``postwatch.<room>.commands.register(app: typer.Typer) -> None``  CLI commands
- ``postwatch.<room>.http.routes(config, db) -> fastapi.APIRouter``  HTTP routes
- ``postwatch.<room>.service.build_services(config, db) -> list[Service]``  background work
A room that lacks one of these modules is skipped; a module that fails to import is an error.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio

# The config file commands read when --config is not given (postwatch.config re-exports it).
# It lives here so that command modules can use it as a Typer default without importing
# pydantic at start-up.
DEFAULT_CONFIG_PATH = Path("postwatch.toml")

ROOMS = (
    "intake",
    "delivery",
    "watch",
    "bounces",
    "forensics",
    "capacity",
    "flow",
    "alerts",
    "web",
    "demo",
    "ops",
)


class Service(Protocol):
    """Background work run by ``postwatch serve`` / ``postwatch worker``.

    ``run`` returns when ``stop`` is set, after finishing (or safely abandoning) the work in hand.
    """

    name: str

    async def run(self, stop: asyncio.Event) -> None: ...


def room_modules(kind: str) -> list[ModuleType]:
    """Import ``postwatch.<room>.<kind>`` for every room that has it."""
    found = []
    for room in ROOMS:
        name = f"postwatch.{room}.{kind}"
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name not in (name, f"postwatch.{room}"):
                raise
    return found
