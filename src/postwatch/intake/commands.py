"""``postwatch submissions ...``: list, export and purge stored submissions."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from postwatch.cli_kit import DEFAULT_CONFIG_PATH, ConfigOption, find_form


def _printable(text: str) -> str:
    """Text for one terminal line: control characters shown as ``?``."""
    return "".join(c if c.isprintable() else "?" for c in text)


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        help="Stored form submissions: list, export, purge (personal data), release.",
        no_args_is_help=True,
    )

    @sub.command("list")
    def list_(
        config: ConfigOption = DEFAULT_CONFIG_PATH,
        form: Annotated[str | None, typer.Option(help="form id or account/form")] = None,
        since: Annotated[str | None, typer.Option(help="ISO time or a duration back (7d)")] = None,
        status: Annotated[
            str | None, typer.Option(help="stored|delivered|partial|failed|spam|throttled")
        ] = None,
        limit: Annotated[int, typer.Option(help="at most this many")] = 100,
    ) -> None:
        """List submissions, oldest first: id, time, form, status, e-mail, deliveries."""
        from postwatch.cli_kit import fail, open_config, open_store, parse_since
        from postwatch.intake.records import iter_submissions
        from postwatch.store import StoreUnavailable

        cfg = open_config(config)
        account, form_id = find_form(cfg, form) if form else (None, None)
        db = open_store(cfg)
        try:
            with db.session(readonly=True) as s:
                rows = list(
                    iter_submissions(
                        s,
                        account=account,
                        form=form_id,
                        since=parse_since(since),
                        status=status,
                        limit=limit,
                    )
                )
        except StoreUnavailable as exc:
            fail(f"database unavailable: {exc}", 3)
        if rows:
            typer.echo(f"{'ID':<32} {'RECEIVED (UTC)':<19} {'FORM':<24} {'STATUS':<9} "
                       "E-MAIL DELIVERIES")
        for r in rows:
            dels = ", ".join(f"{d['recipient']}:{d['state']}" for d in r["deliveries"]) or "-"
            email = _printable(r["email"] or "-")
            typer.echo(
                f"{r['id']:<32} {r['received_at'][:19]:<19} "
                f"{r['account'] + '/' + r['form']:<24} {r['status']:<9} {email} {dels}"
            )

    @sub.command("release")
    def release(
        ids: Annotated[
            list[str] | None, typer.Argument(help="submission ids (see `submissions list`)")
        ] = None,
        all_: Annotated[
            bool, typer.Option("--all", help="every throttled submission (of --form)")
        ] = False,
        form: Annotated[str | None, typer.Option(help="form id or account/form")] = None,
        config: ConfigOption = DEFAULT_CONFIG_PATH,
    ) -> None:
        """Deliver submissions kept as throttled (over the rate limit); idempotent."""
        from postwatch.cli_kit import fail, open_config, open_store
        from postwatch.intake.records import release_throttled
        from postwatch.store import StoreUnavailable

        if not ids and not all_:
            fail("name submission ids, or --all (with --form to limit it)")
        cfg = open_config(config)
        account, form_id = find_form(cfg, form) if form else (None, None)
        db = open_store(cfg)
        try:
            done = release_throttled(db, cfg, ids=ids or None, account=account, form=form_id)
        except StoreUnavailable as exc:
            fail(f"database unavailable: {exc}", 3)
        for sid in done.skipped:
            typer.echo(f"{sid}: its form is no longer in the config; left throttled", err=True)
        for sid in done.duplicates:
            typer.echo(f"{sid}: the visitor sent it again and that one was kept; left throttled "
                       "(releasing it would deliver the sign-up twice)", err=True)
        typer.echo(f"released {len(done.released)} submissions")

    @sub.command("export")
    def export(
        form: Annotated[str, typer.Option(help="form id or account/form")],
        config: ConfigOption = DEFAULT_CONFIG_PATH,
        fmt: Annotated[
            Literal["csv", "json"], typer.Option("--format", help="csv or json")
        ] = "json",
        since: Annotated[str | None, typer.Option(help="ISO time or a duration back (7d)")] = None,
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="write here instead of stdout")
        ] = None,
    ) -> None:
        """Export a form's submissions with their delivery state (JSON list or CSV)."""
        from postwatch.cli_kit import fail, open_config, open_store, parse_since
        from postwatch.intake.records import iter_submissions, write_csv, write_json
        from postwatch.store import StoreUnavailable

        cfg = open_config(config)
        account, form_id = find_form(cfg, form)
        db = open_store(cfg)
        tmp = output.with_name(output.name + ".part") if output else None
        try:
            with db.session(readonly=True) as s:
                rows = iter_submissions(s, account=account, form=form_id, since=parse_since(since))
                write = write_csv if fmt == "csv" else write_json
                if tmp is None:
                    n = write(rows, sys.stdout)
                else:
                    with open(tmp, "w", encoding="utf-8", newline="") as f:
                        n = write(rows, f)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, output)  # type: ignore[arg-type]
        except StoreUnavailable as exc:
            fail(f"database unavailable: {exc}", 3)
        except OSError as exc:
            fail(f"{output}: cannot write: {exc.strerror}")
        if output:
            typer.echo(f"{output}: {n} submissions of {account}/{form_id}", err=True)

    @sub.command("purge")
    def purge(
        config: ConfigOption = DEFAULT_CONFIG_PATH,
        email: Annotated[
            str | None, typer.Option(help="erasure request: delete this person's submissions")
        ] = None,
        expired: Annotated[
            bool, typer.Option("--expired", help="delete what is past its form's retention")
        ] = False,
    ) -> None:
        """Delete submissions (with attachments and delivery jobs); leaves an event per form."""
        from postwatch.cli_kit import fail, open_config, open_store
        from postwatch.intake.records import purge_email, purge_expired
        from postwatch.store import StoreUnavailable

        if (email is None) == (not expired):
            fail("give exactly one of --email ADDRESS or --expired")
        cfg = open_config(config)
        db = open_store(cfg)
        try:
            purged = purge_email(db, email) if email is not None else purge_expired(db, cfg)
        except ValueError as exc:
            fail(f"--email: {exc}")
        except StoreUnavailable as exc:
            fail(f"database unavailable: {exc}", 3)
        total = sum(p.submissions for p in purged)
        for p in purged:
            typer.echo(
                f"{p.account}/{p.form}: {p.submissions} submissions, {p.attachments} attachments,"
                f" {p.jobs} delivery jobs deleted"
            )
        typer.echo(f"purged {total} submissions ({'erasure' if email else 'retention'})")

    app.add_typer(sub, name="submissions")
