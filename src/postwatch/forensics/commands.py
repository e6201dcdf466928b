"""``postwatch investigate``: the CLI edge of forensics (registered by ``postwatch.cli``)."""

from __future__ import annotations

import os
import sys
import time
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"postwatch investigate: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _date(option: str, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        _fail(f"{option}: not a date (YYYY-MM-DD): {value!r}")
    return None  # pragma: no cover


class _Progress:
    """A rich progress bar on stderr, shown only once the work has taken more than a second."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._bar: Any = None
        self._task: Any = None
        self._next_check = 0

    def __call__(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        if self.done < self._next_check:
            return
        self._next_check = self.done + (4 << 20)
        if time.monotonic() - self.started > 1.0 and self.total:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("reading logs", total=self.total, completed=self.done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _write(path: Path, text: str, what: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        _fail(f"{path}: cannot write the {what}: {exc.strerror or exc}", 1)


def investigate_command(
    mailbox: Annotated[str, typer.Option("--mailbox", help="the mailbox the form mails to")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the JSON report here")
    ] = None,
    access_log: Annotated[
        list[str] | None,
        typer.Option("--access-log", help="access log (repeatable; .gz and globs allowed)"),
    ] = None,
    mail_log: Annotated[
        list[str] | None,
        typer.Option("--mail-log", help="mail log (repeatable; .gz and globs allowed)"),
    ] = None,
    form_path: Annotated[
        list[str] | None,
        typer.Option("--form-path", help="URL path of the form's POST (repeatable)"),
    ] = None,
    form_sender: Annotated[
        str | None,
        typer.Option("--form-sender", help="envelope sender of the form's mails"),
    ] = None,
    vhost: Annotated[str | None, typer.Option(help="only requests for this virtual host")] = None,
    since: Annotated[str | None, typer.Option(help="first local date (YYYY-MM-DD)")] = None,
    until: Annotated[
        str | None, typer.Option(help="local date where the window ends (excluded)")
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option("--timezone", help="IANA zone of the logs' times without an offset"),
    ] = None,
    display_timezone: Annotated[
        str | None,
        typer.Option("--display-timezone", help="IANA zone the report shows times in "
                     "(default: --timezone)"),
    ] = None,
    year: Annotated[int | None, typer.Option(help="year of syslog timestamps without one")] = None,
    access_format: Annotated[
        str,
        typer.Option(
            help="auto, combined, common, vhost_combined, nginx or an Apache LogFormat string"
        ),
    ] = "auto",
    mail_format: Annotated[
        str, typer.Option(help="auto, postfix (syslog), exim or dovecot")
    ] = "auto",
    html_out: Annotated[Path | None, typer.Option("--html", help="write the HTML report")] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="write one row per form mail")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="postwatch config: count its sign-ups, add who was told what and quota history",
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="no progress bar, no summary")
    ] = False,
) -> None:
    """Turn access logs and mail logs into an evidence report: submissions, deliveries, bounces
    and why, episodes of a full mailbox, and the people whose sign-ups never arrived.

    Without --json, --html or --csv the three-sentence answer is printed."""
    from postwatch.forensics.engine import (
        InvestigateError,
        InvestigateOptions,
        investigate,
        resolve_timezone,
        total_bytes,
    )

    if not access_log and not mail_log:
        _fail("give at least one --access-log or --mail-log")
    if year is not None and not 1970 <= year <= 2200:
        _fail(f"--year: not a plausible year: {year}")
    opts = InvestigateOptions(
        access_logs=list(access_log or []),
        mail_logs=list(mail_log or []),
        form_paths=list(form_path or []),
        mailbox=mailbox,
        form_sender=form_sender,
        vhost=vhost,
        since=_date("--since", since),
        until=_date("--until", until),
        timezone=timezone,
        year=year,
        access_format=access_format,
        mail_format=mail_format,
    )
    if display_timezone is not None:
        try:
            resolve_timezone(display_timezone)
        except InvestigateError:
            _fail(f"--display-timezone: unknown time zone {display_timezone!r}")
    records = None
    if config is not None:
        from postwatch.forensics.history import load_store_records

        try:
            tz, _ = resolve_timezone(timezone)
            from datetime import datetime
            from datetime import time as dtime

            start = datetime.combine(opts.since, dtime(0), tz) if opts.since else None
            end = datetime.combine(opts.until, dtime(0), tz) if opts.until else None
            records = load_store_records(config, mailbox=mailbox, since=start, until=end)
            opts.events = records.events
        except InvestigateError as exc:
            _fail(str(exc))
        except RuntimeError as exc:
            _fail(f"--config {config}: {exc}", 3)
    outputs = json_out is not None or html_out is not None or csv_out is not None
    progress = None if quiet or not outputs else _Progress(total_bytes(opts))
    try:
        report = investigate(opts, progress)
    except InvestigateError as exc:
        _fail(str(exc))
        return
    finally:
        if progress is not None:
            progress.close()
    if records is not None:
        report.signups = records.signups
    report.display_timezone = display_timezone
    from postwatch.forensics.render import answer, render_csv, render_html, render_json

    if not outputs:
        for sentence in answer(report):
            print(sentence)
        return
    if json_out is not None:
        _write(json_out, render_json(report), "JSON report")
    if html_out is not None:
        _write(html_out, render_html(report), "HTML report")
    if csv_out is not None:
        _write(csv_out, render_csv(report), "CSV")
    if not quiet:
        for sentence in answer(report):
            print(sentence, file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add ``investigate`` to the ``postwatch`` command."""
    app.command("investigate")(investigate_command)
