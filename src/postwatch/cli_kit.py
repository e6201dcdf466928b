"""What every room's CLI commands share: the ``--config`` option, opening the config and the
store, and turning library errors into a message and an exit code (never a traceback).

Rooms' ``commands.py`` import this module, never ``postwatch.cli`` (the edge that imports them).
Importing it is cheap: pydantic (the config) and SQLAlchemy (the store) are imported by the
functions that need them, so ``postwatch --help`` stays fast (tests/core/test_startup.py).

Exit codes (docs/CLI.md lists them; :class:`ExitCode`):

- 0 ok; 1 a check failed or an operation did not succeed;
- 2 bad input or config (the message names the file and line, or the option);
- 3 the database is unavailable (down, unreachable, a bad URL, a path that cannot be a file);
- 4 ``delivery check-smtp``: the SMTP server failed the check;
- 5 a listen address (HTTP or syslog) is already in use or cannot be bound.

Errors a command does not catch itself are turned into these by :class:`CliGroup`, the Click
group of the ``postwatch`` command: :exc:`postwatch.store.StoreUnavailable` (and SQLAlchemy's
operational errors) exit 3, :exc:`postwatch.config.ConfigError` exits 2, an address in use
exits 5. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import sys
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from postwatch.rooms import DEFAULT_CONFIG_PATH, ListenError, config_problems, config_warnings

if TYPE_CHECKING:
    from postwatch.config import Config
    from postwatch.store import Database

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "CliGroup",
    "ConfigOption",
    "ExitCode",
    "fail",
    "find_form",
    "open_config",
    "open_store",
    "parse_since",
]


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    STORE_UNAVAILABLE = 3
    SMTP_CHECK_FAILED = 4
    ADDRESS_IN_USE = 5

    @property
    def meaning(self) -> str:
        """What the code means, for docs/CLI.md (scripts/gen-cli-docs)."""
        return _EXIT_MEANINGS[self]


_EXIT_MEANINGS = {
    ExitCode.OK: "ok",
    ExitCode.FAILED: "a check failed or an operation did not succeed",
    ExitCode.BAD_INPUT: "bad input or config (the message names the file and line, or the "
    "option); `serve` and `worker` refuse to start with a config `check-config` rejects",
    ExitCode.STORE_UNAVAILABLE: "the database is unavailable (down or unreachable, a bad URL, "
    "an SQLite path that cannot be created)",
    ExitCode.SMTP_CHECK_FAILED: "`delivery check-smtp`: the SMTP server failed the check",
    ExitCode.ADDRESS_IN_USE: "`serve` / `worker`: a listen address (`server.listen`, "
    "`syslog.listen`) is in use or cannot be bound",
}


#: the ``--config`` option every command takes (Typer default: ``DEFAULT_CONFIG_PATH``)
ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="the TOML config file", envvar="POSTWATCH_CONFIG"),
]


def fail(message: str, code: int = ExitCode.FAILED) -> NoReturn:
    """Print an error for a person (no traceback) and exit non-zero."""
    typer.secho(f"postwatch: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(int(code))


def open_config(path: Path, *, check: bool = False) -> Config:
    """Load and validate the config; a config that cannot be used exits 2 naming each problem.

    ``check=True`` (``serve``, ``worker``): also the rooms' checks, the same validation as
    ``check-config`` (:func:`postwatch.rooms.config_problems`); any problem exits 2."""
    from postwatch.config import ConfigError, load_config

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)
    if check:
        problems = config_problems(cfg)
        for p in problems:
            typer.secho(f"{path}: {p}", fg=typer.colors.RED, err=True)
        if problems:
            fail(f"{path}: {len(problems)} problem(s); not starting (see postwatch check-config)",
                 ExitCode.BAD_INPUT)
        for w in config_warnings(cfg):
            typer.secho(f"{path}: warning: {w}", fg=typer.colors.YELLOW, err=True)
    return cfg


def store_label(cfg: Config) -> str:
    """The database URL without user and password, for messages."""
    return cfg.database.url.split("@")[-1]


def open_store(cfg: Config, *, migrate: bool = True) -> Database:
    """The configured store, migrated to the newest schema (unless ``migrate=False``).

    A store that cannot be used (server down, a bad URL, an SQLite path under a file, no
    permission) exits 3 with one line saying why."""
    from sqlalchemy.exc import SQLAlchemyError

    from postwatch.store import StoreUnavailable, database_from_config

    where = store_label(cfg)
    try:
        db = database_from_config(cfg)
        if migrate:
            db.migrate()
    except StoreUnavailable as exc:
        fail(f"database {where} unavailable: {exc}", ExitCode.STORE_UNAVAILABLE)
    except SQLAlchemyError as exc:
        fail(f"database {where} unavailable: {_sqlalchemy_message(exc)}",
             ExitCode.STORE_UNAVAILABLE)
    except OSError as exc:
        fail(f"database {where} unavailable: {exc.strerror or exc}: {exc.filename or ''}".rstrip(
            ": "), ExitCode.STORE_UNAVAILABLE)
    return db


def _sqlalchemy_message(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    return " ".join(text.split())[:500]


def find_form(cfg: Config, ref: str, option: str = "--form") -> tuple[str, str]:
    """(account id, form id) of ``form`` or ``account/form``; exits 2 for a form that does not
    exist or a short id that several accounts use (the config's one ambiguity rule: an export
    or a retry never picks another customer's form)."""
    from postwatch.config import AmbiguousFormId, FormNotFound

    try:
        account, form = cfg.find_form(ref)
    except AmbiguousFormId as exc:
        fail(f"{option}: {exc} ({', '.join(exc.candidates)})", ExitCode.BAD_INPUT)
    except FormNotFound as exc:
        known = ", ".join(cfg.form_refs()) or "none"
        fail(f"{option}: {exc} in the config (forms: {known})", ExitCode.BAD_INPUT)
    return account.id, form.id


def parse_since(value: str | None) -> datetime | None:
    """An ISO time/date, or a duration back from now ("2h", "7d")."""
    if value is None:
        return None
    from postwatch.config import parse_duration

    try:
        return datetime.now(UTC) - parse_duration(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since: not a time or duration: {value!r} (e.g. 2026-11-29T08:00, 2h, 7d)",
             ExitCode.BAD_INPUT)
    return dt if dt.tzinfo else dt.astimezone()


def address_in_use(exc: BaseException) -> bool:
    """True for the error of binding a listen address that another process holds."""
    return isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL)


def cli_error(exc: BaseException) -> tuple[str, ExitCode] | None:
    """The message and exit code of a library error a command did not catch, or None (a bug:
    it keeps its traceback). Looks only at modules already imported, so it costs nothing."""
    store = sys.modules.get("postwatch.store.db")
    if store is not None and isinstance(exc, store.StoreUnavailable):
        return f"database unavailable: {exc}", ExitCode.STORE_UNAVAILABLE
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return f"database unavailable: {_sqlalchemy_message(exc)}", ExitCode.STORE_UNAVAILABLE
    config = sys.modules.get("postwatch.config")
    if config is not None and isinstance(exc, config.ConfigError):
        return str(exc), ExitCode.BAD_INPUT
    if isinstance(exc, ListenError):
        return f"cannot listen: {exc.strerror}", ExitCode.ADDRESS_IN_USE
    if address_in_use(exc):
        assert isinstance(exc, OSError)
        return f"cannot listen: {exc.strerror or exc}", ExitCode.ADDRESS_IN_USE
    return None


class CliGroup(TyperGroup):
    """The ``postwatch`` command group: a library error becomes a message and an exit code."""

    # ctx is typer's (vendored) click Context; Any keeps this override valid for either
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:
            known = cli_error(exc)
            if known is None:
                raise
            fail(*known)
