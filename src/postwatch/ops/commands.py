"""Commands for operators: ``postwatch backup``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from postwatch.rooms import DEFAULT_CONFIG_PATH


def register(app: typer.Typer) -> None:
    app.command()(backup)


def backup(
    dest: Annotated[Path, typer.Argument(help="the file to write the copy to")],
    config: Annotated[
        Path,
        typer.Option("--config", "-c", help="the TOML config file", envvar="POSTWATCH_CONFIG"),
    ] = DEFAULT_CONFIG_PATH,
    force: Annotated[bool, typer.Option(help="replace DEST if it exists")] = False,
) -> None:
    """Copy the SQLite store while postwatch runs (for PostgreSQL: prints the pg_dump way)."""
    from postwatch.config import ConfigError, load_config
    from postwatch.ops.backup import BackupError, backup_sqlite, pg_dump_hint, sqlite_path
    from postwatch.store.db import normalise_url

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.secho(f"postwatch: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    base = cfg.source_path.parent if cfg.source_path is not None else Path.cwd()
    url = normalise_url(cfg.database.url, base)
    source = sqlite_path(url)
    if source is None:
        typer.echo("postwatch: the store is PostgreSQL; back it up with pg_dump:", err=True)
        typer.echo(pg_dump_hint(url, dest))
        raise typer.Exit(2)
    try:
        res = backup_sqlite(source, dest, force=force)
    except BackupError as exc:
        typer.secho(f"postwatch: backup not made: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{res.dest}: {res.size / 1e6:.1f} MB copied from {res.source} in "
               f"{res.seconds:.1f} s (integrity ok)")
