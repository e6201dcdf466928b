"""The plug-in contract between the feature rooms and the edges (cli.py, app.py).

A feature room is a package ``postwatch.<room>`` listed in :data:`ROOMS`. It plugs in through
up to four modules, all optional; the edges reach them only through :class:`Room`:

============================  ==========================================================
module and function           what the edge does with it
============================  ==========================================================
``<room>.commands.register``  ``register(app: typer.Typer) -> None``: adds CLI commands
                              (which import :mod:`postwatch.cli_kit`, never ``cli.py``)
``<room>.http.routes``        ``routes(config, db) -> APIRouter | HttpPart``: HTTP routes,
                              and optionally an ASGI wrapper (:class:`HttpPart`)
``<room>.service``            ``build_services(config, db) -> list[Service]``: background
                              work of ``serve`` / ``worker`` (:class:`Service`; periodic
                              work uses :class:`postwatch.services.PeriodicService`)
``<room>.checks.check``       ``check(config) -> list[str]``: problems of a loaded config
                              that ``check-config`` prints and ``serve`` refuses to start with
============================  ==========================================================

A room that lacks one of these modules is skipped for it; a module that fails to import is an
error (never silently a room without its commands). Rooms hand the edges nothing through
``app.state`` or attributes set on framework objects: what a room gives is what these
functions return.

This module is imported at CLI start-up: it imports nothing heavy (the config, the store and
FastAPI are only named for type checking).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

if TYPE_CHECKING:
    import asyncio

    import typer
    from fastapi import APIRouter
    from starlette.types import ASGIApp

    from postwatch.config import Config
    from postwatch.store import Database

# The config file commands read when --config is not given (postwatch.config re-exports it).
# It lives here so that command modules can use it as a Typer default without importing
# pydantic at start-up.
DEFAULT_CONFIG_PATH = Path("postwatch.toml")

#: the feature rooms, in the order their commands, routes and services are added
ROOMS = (
    "intake",
    "delivery",
    "watch",
    "bounces",
    "forensics",
    "capacity",
    "alerts",
    "demo",
    "ops",
)


class Service(Protocol):
    """Background work run by ``postwatch serve`` / ``postwatch worker``.

    ``run`` returns when ``stop`` is set, after finishing (or safely abandoning) the work in hand.
    An exception out of ``run`` is logged and the service is started again after a pause.
    """

    name: str

    async def run(self, stop: asyncio.Event) -> None: ...


@runtime_checkable
class Listener(Protocol):
    """A service that binds listen sockets (the syslog receiver). ``serve``/``worker`` call
    ``listen`` for every such service before any service runs, so an address that cannot be
    bound stops start-up with one message (:class:`ListenError`) instead of a service that
    fails again and again while the rest runs."""

    async def listen(self) -> None: ...


class ListenError(OSError):
    """A listen address that cannot be bound: in use, not an address of this machine, or a
    privileged port. The message names the address and the option it comes from."""

    def __init__(self, exc: OSError, address: str, option: str) -> None:
        why = exc.strerror or str(exc)
        super().__init__(exc.errno, f"{option} = {address!r}: {why}")


@dataclass(frozen=True)
class HttpPart:
    """What a room serves over HTTP: its routes, and optionally a wrapper of the whole ASGI
    app (applied by ``postwatch serve``; the intake takes ``/f/...`` before the framework's
    routing that way). Without the wrapper the routes answer the same, only slower."""

    router: APIRouter
    wrap_asgi: Callable[[ASGIApp], ASGIApp] | None = None


class _CommandsModule(Protocol):
    def register(self, app: typer.Typer) -> None: ...


class _HttpModule(Protocol):
    def routes(self, config: Config, db: Database) -> APIRouter | HttpPart: ...


class _ServiceModule(Protocol):
    def build_services(self, config: Config, db: Database) -> list[Service]: ...


class _ChecksModule(Protocol):
    def check(self, config: Config) -> list[str]: ...


class _WarningsModule(Protocol):
    def warnings(self, config: Config) -> list[str]: ...


class Room(Protocol):
    """One feature room as the edges see it."""

    name: str

    def register_commands(self, app: typer.Typer) -> None: ...

    def http(self, config: Config, db: Database) -> HttpPart | None: ...

    def services(self, config: Config, db: Database) -> list[Service]: ...

    def check(self, config: Config) -> list[str]: ...

    def warnings(self, config: Config) -> list[str]: ...


class PackageRoom:
    """A :class:`Room` found by its modules (``postwatch.<name>.commands`` ...)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _module(self, kind: str) -> ModuleType | None:
        name = f"postwatch.{self.name}.{kind}"
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            return None

    def register_commands(self, app: typer.Typer) -> None:
        mod = self._module("commands")
        if mod is not None:
            cast(_CommandsModule, mod).register(app)

    def http(self, config: Config, db: Database) -> HttpPart | None:
        mod = self._module("http")
        if mod is None:
            return None
        part = cast(_HttpModule, mod).routes(config, db)
        return part if isinstance(part, HttpPart) else HttpPart(part)

    def services(self, config: Config, db: Database) -> list[Service]:
        mod = self._module("service")
        return list(cast(_ServiceModule, mod).build_services(config, db)) if mod else []

    def check(self, config: Config) -> list[str]:
        mod = self._module("checks")
        return list(cast(_ChecksModule, mod).check(config)) if mod else []

    def warnings(self, config: Config) -> list[str]:
        mod = self._module("checks")
        if mod is None or not hasattr(mod, "warnings"):
            return []
        return list(cast(_WarningsModule, mod).warnings(config))

    def __repr__(self) -> str:
        return f"PackageRoom({self.name!r})"


def rooms() -> list[Room]:
    """Every feature room, in :data:`ROOMS` order."""
    return [PackageRoom(name) for name in ROOMS]


def config_problems(config: Config) -> list[str]:
    """The one validation of a loaded config beyond its schema: every room's checks.
    ``check-config`` prints them; ``serve`` and ``worker`` refuse to start with any."""
    return [p for room in rooms() for p in room.check(config)]


def config_warnings(config: Config) -> list[str]:
    """Set-ups that work but lose news (nobody to tell; a relay whose bounces nobody reads):
    every room's ``checks.warnings``. ``check-config`` prints them and still passes; ``serve``
    and ``worker`` log them at start."""
    return [w for room in rooms() for w in room.warnings(config)]
