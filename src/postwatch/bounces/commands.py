"""CLI: ``postwatch classify-bounce PATH...``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from postwatch.bounces.sources import SourceError


def register(app: typer.Typer) -> None:
    @app.command("classify-bounce")
    def classify_bounce(
        paths: Annotated[
            list[Path], typer.Argument(help=".eml files, mbox files or Maildir folders")
        ],
        failures_only: Annotated[
            bool, typer.Option("--failures-only", help="skip messages that are not failures")
        ] = False,
    ) -> None:
        """Read bounce messages; print one JSON object per failed recipient.

        Keys: file, index, recipient, status (enhanced code), reason (the shared taxonomy),
        permanent, diagnostic, plus kind (bounce, delay, auto_reply, delivery_receipt,
        read_receipt, feedback_report, not_a_bounce) and failed. A message that is not a
        failure gets one object with failed=false saying what it is.
        """
        from postwatch.bounces.classify import classify_path

        errors = 0
        for path in paths:
            try:
                for row in classify_path(path):
                    if failures_only and not row["failed"]:
                        continue
                    typer.echo(json.dumps(row, ensure_ascii=False))
            except SourceError as exc:
                typer.secho(f"postwatch: {exc}", fg=typer.colors.RED, err=True)
                errors += 1
        if errors:
            raise typer.Exit(2)
