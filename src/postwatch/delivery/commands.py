"""``postwatch delivery ...``: look at the outbox, retry now, check the SMTP settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from postwatch.cli_kit import DEFAULT_CONFIG_PATH, ConfigOption


def _aware(t: datetime | None) -> datetime | None:
    """Times from the store are UTC (SQLite gives them back without their zone)."""
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def _shown(t: datetime | None, zone: str) -> str:
    """A time for people, with its zone: ``2026-12-01 15:05:00 CET`` in ``[alerts] timezone``."""
    t = _aware(t)
    if t is None:
        return "-"
    from zoneinfo import ZoneInfo

    return t.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


QUEUE_HEADER = f"{'JOB':>7} {'STATE':<9} {'ROLE':<8} {'RECIPIENT':<32} {'TRIES':>5} " \
    f"{'NEXT TRY':<23} LAST REPLY"


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        help="The delivery outbox: what waits, retry now, check the SMTP settings.",
        no_args_is_help=True,
    )

    @sub.command("queue")
    def queue_(
        config: ConfigOption = DEFAULT_CONFIG_PATH,
        recipient: Annotated[str | None, typer.Option(help="only this recipient")] = None,
        all_: Annotated[bool, typer.Option("--all", help="delivered and failed too")] = False,
        limit: Annotated[int, typer.Option(help="at most this many")] = 1000,
        as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    ) -> None:
        """Jobs waiting to be delivered (pending, sending, held), the next due first."""
        from postwatch.cli_kit import fail, open_config, open_store
        from postwatch.outbox import queue
        from postwatch.store import StoreUnavailable

        cfg = open_config(config)
        db = open_store(cfg)
        try:
            with db.session(readonly=True) as s:
                rows: list[dict[str, Any]] = [
                    {
                        "job": j.id, "submission": j.submission_id, "form": f"{j.account}/{j.form}",
                        "recipient": j.recipient, "role": j.role, "state": j.state,
                        "attempts": j.attempts, "next_attempt_at": _aware(j.next_attempt_at),
                        "hold_until": _aware(j.hold_until),
                        "last_reason": j.last_reason, "last_reply": j.last_reply,
                    }
                    for j in queue(s, include_done=all_, recipient=recipient, limit=limit)
                ]
        except StoreUnavailable as exc:
            fail(f"database unavailable: {exc}", 3)
        zone = cfg.alerts.timezone
        if rows and not as_json:
            typer.echo(QUEUE_HEADER)
        for r in rows:
            if as_json:
                iso = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in r.items()}
                typer.echo(json.dumps(iso, ensure_ascii=False, sort_keys=True))
            else:
                typer.echo(
                    f"{r['job']:>7} {r['state']:<9} {r['role']:<8} {r['recipient']:<32} "
                    f"{r['attempts']:>5} {_shown(r['next_attempt_at'], zone):<23} "
                    f"{r['last_reply'] or ''}"
                )
        if not rows and not as_json:
            typer.echo("the outbox is empty" if not all_ else "no delivery jobs")

    @sub.command("retry")
    def retry(
        config: ConfigOption = DEFAULT_CONFIG_PATH,
        recipient: Annotated[str | None, typer.Option(help="only jobs to this address")] = None,
        submission: Annotated[str | None, typer.Option(help="only this submission")] = None,
        form: Annotated[str | None, typer.Option(help="only this form (id or account/form)")]
        = None,
    ) -> None:
        """Retry waiting jobs now (e.g. after a full mailbox was emptied)."""
        from postwatch.cli_kit import fail, find_form, open_config, open_store
        from postwatch.outbox import retry_now
        from postwatch.store import StoreUnavailable

        cfg = open_config(config)
        account = form_id = None
        if form:
            account, form_id = find_form(cfg, form)
        db = open_store(cfg)
        try:
            n = retry_now(db, recipient=recipient, submission=submission, account=account,
                          form=form_id)
        except StoreUnavailable as exc:
            fail(f"database unavailable: {exc}", 3)
        typer.echo(f"{n} job(s) due now; running workers pick them up within "
                   f"{cfg.delivery.poll_interval.total_seconds():g}s")

    @sub.command("check-smtp")
    def check_smtp(config: ConfigOption = DEFAULT_CONFIG_PATH) -> None:
        """Connect to the configured SMTP server, do TLS and AUTH, send nothing."""
        from postwatch.cli_kit import ExitCode, fail, open_config
        from postwatch.delivery.send import probe

        cfg = open_config(config)
        s = cfg.smtp
        where = f"{s.host}:{s.port} ({s.security}{', auth as ' + s.username if s.username else ''})"
        reply = probe(s)
        if not reply.delivered:
            fail(f"smtp {where}: failed during {reply.stage}: {reply.line}",
                 ExitCode.SMTP_CHECK_FAILED)
        typer.echo(f"smtp {where}: ok")

    app.add_typer(sub, name="delivery")
