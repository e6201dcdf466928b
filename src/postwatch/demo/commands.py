"""``postwatch demo``: the gym's incident, replayed on this machine in about two minutes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command()(demo)


def demo(
    fast: Annotated[
        bool, typer.Option("--fast", help="replay at CI speed (seconds, not minutes)")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the measured summary as JSON (story on stderr)")
    ] = False,
    workdir: Annotated[
        Path | None,
        typer.Option("--dir", help="an empty folder for the config, store, logs and report "
                     "(default: a new temporary folder, kept)"),
    ] = None,
) -> None:
    """Replay a real incident against embedded mail servers: nothing to configure."""
    from rich.console import Console

    from postwatch.demo.scenario import FAST, NORMAL, DemoFailed, run_demo

    if workdir is None:
        work = Path(tempfile.mkdtemp(prefix="postwatch-demo-"))
    else:
        work = workdir
        if work.exists() and any(work.iterdir()):
            typer.secho(f"postwatch: --dir {work} is not empty", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        work.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=as_json, highlight=False, soft_wrap=True)
    try:
        summary = run_demo(work, FAST if fast else NORMAL, console)
    except DemoFailed as exc:
        typer.secho(f"postwatch: demo stopped: {exc} (files kept in {work})",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.secho(f"postwatch: demo interrupted (files kept in {work})", err=True)
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(summary.as_json())
        console.print(summary.last_line())
    else:
        console.print()
        console.print(summary.last_line(), style="bold", soft_wrap=True)
