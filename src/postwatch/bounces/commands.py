"""CLI: ``postwatch classify-bounce PATH...``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from postwatch.rooms import DEFAULT_CONFIG_PATH

# the same option as postwatch.cli.ConfigOption (not imported: cli imports this module)
ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="the TOML config file", envvar="POSTWATCH_CONFIG"),
]


def register(app: typer.Typer) -> None:
    @app.command("classify-bounce")
    def classify_bounce(
        paths: Annotated[
            list[Path], typer.Argument(help=".eml files, mbox files or Maildir folders")
        ],
        failures_only: Annotated[
            bool, typer.Option("--failures-only", help="skip messages that are not failures")
        ] = False,
        apply: Annotated[
            bool,
            typer.Option(
                "--apply",
                help="also store what they say (events; a bounce of postwatch's own mail holds "
                "or fails its delivery job and sends the lead to the fallback); idempotent",
            ),
        ] = False,
        config: ConfigOption = DEFAULT_CONFIG_PATH,
    ) -> None:
        """Read bounce messages; print one JSON object per failed recipient.

        Keys: file, index, recipient, status (enhanced code), reason (the shared taxonomy),
        permanent, diagnostic, plus kind (bounce, delay, auto_reply, delivery_receipt,
        read_receipt, feedback_report, not_a_bounce) and failed. A message that is not a
        failure gets one object with failed=false saying what it is. With --apply (needs
        --config), the messages are also stored like those of a watched bounce mailbox.
        """
        from postwatch.bounces.classify import classify_path
        from postwatch.bounces.sources import SourceError

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
        if apply and not errors:
            _apply(paths, config)
        if errors:
            raise typer.Exit(2)


def _apply(paths: list[Path], config: Path) -> None:
    from collections import Counter

    from postwatch.bounces.imap import store_bounce
    from postwatch.bounces.sources import read_messages
    from postwatch.cli import fail, open_config, open_store
    from postwatch.observations import watched_mailboxes
    from postwatch.store import StoreUnavailable

    cfg = open_config(config)
    db = open_store(cfg)
    watched = watched_mailboxes(cfg)
    results: Counter[str] = Counter()
    try:
        for path in paths:
            for located in read_messages(path):
                where = f"{located.file}#{located.index}"
                with db.session() as s:
                    _report, done = store_bounce(
                        s, cfg, located.message, account=None, source=f"bounce:file:{where}",
                        evidence=where[-500:], watched=watched,
                    )
                results.update(d.result for d in done)
    except StoreUnavailable as exc:
        fail(f"store unavailable: {exc}", 3)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(results.items())) or "none"
    typer.echo(f"postwatch: applied; delivery jobs: {summary}", err=True)
