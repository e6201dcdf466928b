"""CLI: ``postwatch watch-status`` (where each followed mail log was read up to)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from postwatch.cli_kit import DEFAULT_CONFIG_PATH, ConfigOption


def register(app: typer.Typer) -> None:
    @app.command("watch-status")
    def watch_status(
        config: ConfigOption = DEFAULT_CONFIG_PATH,
        as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    ) -> None:
        """Show each followed mail log: file size, position read up to, lines, unparsed."""
        from sqlalchemy import select

        from postwatch.cli_kit import open_config, open_store
        from postwatch.config import resolve_path
        from postwatch.store.models_watch import FollowedFile

        cfg = open_config(config)
        db = open_store(cfg)
        with db.session(readonly=True) as s:
            rows = {r.path: r for r in s.scalars(select(FollowedFile))}
        for m in cfg.maillogs:
            path = resolve_path(cfg, m.path)
            row = rows.get(str(path))
            try:
                size: int | None = path.stat().st_size
            except OSError:
                size = None
            item = {
                "path": str(path),
                "format": m.format,
                "size": size,
                "offset": row.offset if row else None,
                "behind_bytes": (size - row.offset) if (row and size is not None) else None,
                "lines": row.lines if row else 0,
                "unparsed": row.unparsed if row else 0,
                "updated_at": row.updated_at.isoformat() if row else None,
            }
            if as_json:
                typer.echo(json.dumps(item))
            else:
                state = "never read" if row is None else f"at {row.offset} of {size}"
                missing = " (file missing)" if size is None else ""
                typer.echo(
                    f"{path} [{m.format}]: {state}{missing}, {item['lines']} lines this run, "
                    f"{item['unparsed']} unparsed"
                )
