"""The ``postwatch`` command: a thin edge that turns domain errors into messages.

Rooms add their own commands through ``postwatch.<room>.commands.register(app)``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Coroutine
from typing import Annotated, Any

import typer

from postwatch import __version__
from postwatch.cli_kit import (
    DEFAULT_CONFIG_PATH,
    CliGroup,
    ConfigOption,
    ExitCode,
    fail,
    open_config,
    open_store,
    parse_since,
)
from postwatch.rooms import config_problems, config_warnings, rooms

# Start-up stays cheap: pydantic (postwatch.config), SQLAlchemy (postwatch.store), asyncio and
# logging are imported inside the commands that use them, so ``postwatch --help`` and
# ``postwatch investigate`` do not pay for them (tests/core/test_startup.py).

app = typer.Typer(
    name="postwatch",
    help="Form intake that never loses a lead, and a watch on the mail path behind it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=CliGroup,
)

# what commands share lives in postwatch.cli_kit (rooms import it from there, never from here)
__all__ = ["ConfigOption", "app", "fail", "main", "open_config", "open_store", "parse_since"]


def _setup_logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the service on uvloop where it is installed, else on asyncio's own loop."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"postwatch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="print the version", is_eager=True, callback=_print_version),
    ] = False,
) -> None:
    """Form intake that never loses a lead, and a watch on the mail path behind it."""


@app.command()
def init(
    config: ConfigOption = DEFAULT_CONFIG_PATH,
    force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False,
) -> None:
    """Write a sample config to start from."""
    from postwatch.config import write_sample_config

    if config.exists() and not force:
        fail(f"{config} exists; use --force to overwrite it")
    write_sample_config(config)
    typer.echo(f"wrote {config}; edit it, then run: postwatch serve --config {config}")


@app.command("check-config")
def check_config(config: ConfigOption = DEFAULT_CONFIG_PATH) -> None:
    """Validate a config file; print every problem with its location."""
    from postwatch.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        for loc, msg in exc.problems:
            typer.echo(f"{exc.path}: {loc + ': ' if loc else ''}{msg}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT) from None
    problems = config_problems(cfg)
    for w in config_warnings(cfg):  # set-ups that work but lose news: said, not failed
        typer.echo(f"{config}: warning: {w}", err=True)
    for p in problems:
        typer.echo(f"{config}: {p}", err=True)
    if problems:
        raise typer.Exit(ExitCode.BAD_INPUT)
    forms = sum(len(a.forms) for a in cfg.accounts)
    typer.echo(f"{config}: ok ({len(cfg.accounts)} accounts, {forms} forms)")


@app.command()
def migrate(config: ConfigOption = DEFAULT_CONFIG_PATH) -> None:
    """Create or upgrade the database schema."""
    cfg = open_config(config)
    open_store(cfg)
    typer.echo("database schema is up to date")


@app.command()
def serve(
    config: ConfigOption = DEFAULT_CONFIG_PATH,
    init_config: Annotated[
        bool, typer.Option("--init", help="write a sample config first if the file is missing")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log debug detail")] = False,
) -> None:
    """Run HTTP intake, delivery workers, watches and the scheduler in one process.

    Refuses to start (exit 2) with a config that check-config rejects, and (exit 5) when a
    listen address is in use.
    """
    from postwatch.config import write_sample_config

    if init_config and not config.exists():
        write_sample_config(config)
        typer.echo(f"wrote sample config {config}", err=True)
    _setup_logging(verbose)
    cfg = open_config(config, check=True)
    db = open_store(cfg)
    from postwatch.app import run

    _run_loop(run(cfg, db, http=True))


@app.command()
def worker(
    config: ConfigOption = DEFAULT_CONFIG_PATH,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log debug detail")] = False,
) -> None:
    """Run the background services only (delivery, watches), for scale-out.

    Refuses to start like serve: a config check-config rejects (exit 2), a syslog listen
    address in use (exit 5).
    """
    _setup_logging(verbose)
    cfg = open_config(config, check=True)
    db = open_store(cfg)
    from postwatch.app import run

    _run_loop(run(cfg, db, http=False))


@app.command()
def events(
    config: ConfigOption = DEFAULT_CONFIG_PATH,
    kind: Annotated[list[str] | None, typer.Option("--kind", "-k", help="repeatable")] = None,
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time or a duration back (2h)")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """List recorded events, oldest first."""
    from postwatch.store import StoreUnavailable
    from postwatch.store.events import event_dict, fetch_events

    cfg = open_config(config)
    db = open_store(cfg)
    try:
        with db.session(readonly=True) as s:
            rows = fetch_events(
                s, kinds=kind, account=account, since=parse_since(since), limit=limit
            )
            out = [event_dict(e) for e in rows]
    except StoreUnavailable as exc:
        fail(f"database unavailable: {exc}", ExitCode.STORE_UNAVAILABLE)
    for e in out:
        if as_json:
            typer.echo(json.dumps(e, ensure_ascii=False, sort_keys=True))
        else:
            where = e["mailbox"] or e["form"] or ""
            typer.echo(
                f"{e['id']:>7} {e['at']} {e['kind']:<22} {e['account'] or '-':<12} {where}"
                f" {json.dumps(e['data'], ensure_ascii=False)}"
            )


for _room in rooms():
    _room.register_commands(app)


def main() -> None:
    app()
