"""CLI: ``postwatch alerts ...`` and ``postwatch responsibilities``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from postwatch.alerts.messages import clean_text
from postwatch.cli_kit import DEFAULT_CONFIG_PATH
from postwatch.cli_kit import ConfigOption as ConfigOpt

if TYPE_CHECKING:
    from postwatch.config import Config

JsonOpt = Annotated[bool, typer.Option("--json", help="JSON output")]


def register(app: typer.Typer) -> None:
    alerts = typer.Typer(help="Alerts: list, acknowledge, history, channels, silences.",
                         no_args_is_help=True)
    app.add_typer(alerts, name="alerts")

    @app.command("responsibilities")
    def responsibilities(
        account: Annotated[str, typer.Option(help="the account id")],
        html: Annotated[bool, typer.Option("--html", help="a one-page HTML sheet")] = False,
        language: Annotated[str, typer.Option("--language", help="en or nl")] = "en",
        config: ConfigOpt = DEFAULT_CONFIG_PATH,
    ) -> None:
        """Print who is told about what for an account (text, or HTML to attach to an agreement)."""
        from postwatch.alerts.sheet import html_sheet, text_sheet
        from postwatch.cli_kit import fail, open_config

        cfg = open_config(config)
        try:
            acc = cfg.account(account)
        except KeyError:
            fail(f"no account {account!r} in {config}")
        if language not in ("en", "nl"):
            fail(f"--language: en or nl, not {language!r}")
        sheet = html_sheet(cfg, acc, language) if html else text_sheet(cfg, acc, language)
        typer.echo(sheet, nl=False)

    @alerts.command("list")
    def list_(
        account: Annotated[str | None, typer.Option(help="only this account")] = None,
        all_: Annotated[bool, typer.Option("--all", help="include resolved alerts")] = False,
        as_json: JsonOpt = False,
        config: ConfigOpt = DEFAULT_CONFIG_PATH,
    ) -> None:
        """List open alerts (newest first)."""
        from postwatch.alerts.engine import Engine
        from postwatch.alerts.queries import list_alerts
        from postwatch.cli_kit import open_config, open_store

        cfg = open_config(config)
        db = open_store(cfg)
        with db.session(readonly=True) as s:
            rows = list_alerts(s, account=account, include_resolved=all_)
            held = Engine(cfg, db).held_back(s)
        for r in rows:
            r["held_back"] = held.get(r["id"], "")
        if as_json:
            typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
            return
        if not rows:
            typer.echo("no open alerts" if not all_ else "no alerts")
            return
        tz = cfg.alerts.timezone
        typer.echo(
            f"{'ID':>6} {'STATE':<12} {'SEVERITY':<8} {'ACCOUNT':<12} {'RULE':<13} "
            f"{'TOLD UP TO':<12} {'SINCE (' + tz + ')':<20} SUBJECT"
        )
        for r in rows:
            ack = f" acked by {clean_text(r['acked_by'])}" if r["acked_by"] else ""
            hold = f" [held back: {r['held_back']}]" if r["held_back"] else ""
            told = _told(cfg, r)
            since = _local(r["started_at"], tz)
            what = f"x{r['count']}"
            if r.get("signups"):
                n = r["signups"]
                what = f"{n} sign-up{'' if n == 1 else 's'}, {what}"
            typer.echo(
                f"{r['id']:>6} {r['state']:<12} {r['severity']:<8} {clean_text(r['account']):<12} "
                f"{r['rule']:<13} {told:<12} {since:<20} {clean_text(r['subject'])}  {what}"
                f"{ack}{hold}"
            )

    @alerts.command("ack")
    def ack(
        alert_id: Annotated[int, typer.Argument(help="the alert's id")],
        by: Annotated[str, typer.Option(help="who acknowledges")] = "cli",
        config: ConfigOpt = DEFAULT_CONFIG_PATH,
    ) -> None:
        """Acknowledge an alert: stops its reminders and escalation."""
        from postwatch.alerts.engine import acknowledge
        from postwatch.cli_kit import fail, open_config, open_store

        cfg = open_config(config)
        db = open_store(cfg)
        with db.session() as s:
            res = acknowledge(s, alert_id, by=by, now=datetime.now(UTC), via="cli")
        if not res.ok:
            fail(res.message)
        typer.echo(res.message)

    @alerts.command("history")
    def history(
        account: Annotated[
            str | None, typer.Option(help="the account id (default: every account)")
        ] = None,
        since: Annotated[str | None, typer.Option(help="ISO time or a duration back (7d)")] = None,
        as_json: JsonOpt = False,
        config: ConfigOpt = DEFAULT_CONFIG_PATH,
    ) -> None:
        """Who was told what, when, on which channel (masked), with what result."""
        from postwatch.alerts.queries import history as hist
        from postwatch.cli_kit import fail, open_config, open_store, parse_since

        cfg = open_config(config)
        if account is not None:
            try:
                cfg.account(account)
            except KeyError:
                fail(f"no account {account!r} in {config}")
        db = open_store(cfg)
        accounts = [account] if account is not None else [a.id for a in cfg.accounts]
        with db.session(readonly=True) as s:
            rows = [
                r | {"account": acc} if account is None else r
                for acc in accounts
                for r in hist(s, account=acc, since=parse_since(since))
            ]
        if account is None:  # a digest over several accounts is listed once per account
            rows.sort(key=lambda r: (r["created_at"], r["notification"]))
        if as_json:
            typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
            return
        if not rows:
            typer.echo(f"no notifications for {account or 'any account'}")
        tz = cfg.alerts.timezone
        for r in rows:
            ack = f" (acknowledged by {clean_text(r['acked_by'])})" if r["acked_by"] else ""
            acc = f"{r['account']} " if account is None else ""
            typer.echo(
                f"{_local(r['created_at'], tz)} ({tz}) {acc}#{r['notification']} alert "
                f"{r['alert'] or '-'} {r['kind']} -> {clean_text(r['contact'])} ({r['role']}): "
                f"{r['state']}{ack}"
            )
            typer.echo(f"    {clean_text(r['title'])}")
            for t in r["attempts"]:
                err = f": {clean_text(t['error'])}" if t["error"] else ""
                typer.echo(f"    {_local(t['at'], tz)} {t['result']:<7} {t['channel']}{err}")

    @alerts.command("channels")
    def channels(
        account: Annotated[str | None, typer.Option(help="only this account")] = None,
        test: Annotated[bool, typer.Option("--test", help="send a test message on each")] = False,
        config: ConfigOpt = DEFAULT_CONFIG_PATH,
    ) -> None:
        """Every contact's channels (masked) with their last result and error."""
        from postwatch.alerts import channels as ch
        from postwatch.alerts import routing
        from postwatch.alerts.dispatch import channel_status
        from postwatch.cli_kit import open_config, open_store
        from postwatch.store.models_alerts import AlertChannel

        cfg = open_config(config)
        db = open_store(cfg)
        now = datetime.now(UTC)
        bad = 0
        for acc in cfg.accounts:
            if account is not None and acc.id != account:
                continue
            for c in acc.contacts:
                key = routing.contact_key(acc, c)
                typer.echo(f"{acc.id}: {c.name} ({c.role}, {c.language})")
                if not c.channels:
                    typer.echo("    no channels")
                    bad += 1
                for info, url in zip(routing.contact_channels(c), c.channels, strict=True):
                    if test and info.valid:
                        ok, err = ch.send(
                            url.get_secret_value(),
                            "postwatch test",
                            f"Test message for {c.name} ({acc.id}) from postwatch.",
                        )
                        with db.session() as s:
                            channel_status(s, key, info.index, info.masked, ok, err, now)
                    with db.session(readonly=True) as s:
                        st = s.get(AlertChannel, (key, info.index))
                        if st is None:
                            status = "never used"
                        elif st.failures:
                            bad += 1
                            status = (
                                f"FAILING ({st.failures}x, last {st.last_error_at:%Y-%m-%d %H:%M}"
                                f"): {st.last_error}"
                            )
                        else:
                            status = f"ok (last {st.last_ok_at:%Y-%m-%d %H:%M})"
                    if not info.valid:
                        status = f"NOT USABLE: {info.error}"
                        bad += 1
                    typer.echo(f"    {info.index + 1}. {info.masked}  {status}")
        if bad:
            raise typer.Exit(1)

    @alerts.command("silence")
    def silence(
        for_: Annotated[str, typer.Option("--for", help="how long (2h, 3d)")],
        account: Annotated[str | None, typer.Option(help="account (default: all)")] = None,
        concern: Annotated[str | None, typer.Option(help="mailbox, site, ...")] = None,
        subject: Annotated[str | None, typer.Option(help="mailbox address or site")] = None,
        reason: Annotated[str, typer.Option(help="why (shown in the record)")] = "",
        config: ConfigOpt = DEFAULT_CONFIG_PATH,
    ) -> None:
        """Hold back notifications of matching alerts for a while (they are still recorded)."""
        from postwatch.cli_kit import fail, open_config, open_store
        from postwatch.config import parse_duration
        from postwatch.store.models_alerts import AlertSilence

        try:
            length = parse_duration(for_)
        except ValueError as exc:
            fail(f"--for: {exc}")
        cfg = open_config(config)
        db = open_store(cfg)
        now = datetime.now(UTC)
        with db.session() as s:
            row = AlertSilence(account=account, concern=concern,
                               subject=subject.lower() if subject else None, starts=now,
                               ends=now + length, reason=reason, created_by="cli")
            s.add(row)
            s.flush()
            sid = row.id
        typer.echo(f"silence {sid} until {(now + length).isoformat(timespec='minutes')}")

    @alerts.command("silences")
    def silences(config: ConfigOpt = DEFAULT_CONFIG_PATH) -> None:
        """Silences (from the config and from `alerts silence`) and maintenance windows."""
        from sqlalchemy import select

        from postwatch.cli_kit import open_config, open_store
        from postwatch.store.models_alerts import AlertSilence

        cfg = open_config(config)
        db = open_store(cfg)
        now = datetime.now(UTC)
        for sc in cfg.alerts.silences:
            typer.echo(
                f"config  account={sc.account or '*'} concern={sc.concern or '*'} "
                f"subject={sc.subject or '*'} until {sc.ends.isoformat()} {sc.reason}"
            )
        with db.session(readonly=True) as s:
            for row in s.scalars(select(AlertSilence).where(AlertSilence.ends > now)):
                typer.echo(
                    f"{row.id:<7} account={row.account or '*'} concern={row.concern or '*'} "
                    f"subject={row.subject or '*'} until {row.ends.isoformat()} {row.reason}"
                )
        for m in cfg.alerts.maintenance:
            typer.echo(
                f"maintenance {','.join(m.days)} {m.start}-{m.end} {m.timezone} "
                f"accounts={','.join(m.accounts) or '*'} {m.reason}"
            )

    @alerts.command("unsilence")
    def unsilence(
        silence_id: Annotated[int, typer.Argument(help="the silence's id")],
        config: ConfigOpt = DEFAULT_CONFIG_PATH,
    ) -> None:
        """End a silence now."""
        from postwatch.cli_kit import fail, open_config, open_store
        from postwatch.store.models_alerts import AlertSilence

        cfg = open_config(config)
        db = open_store(cfg)
        with db.session() as s:
            row = s.get(AlertSilence, silence_id)
            if row is None:
                fail(f"no silence {silence_id}")
            row.ends = datetime.now(UTC)
        typer.echo(f"silence {silence_id} ended")


def _local(iso: str | None, tz: str) -> str:
    """An ISO time from the store in the operator's zone (``[alerts] timezone``)."""
    from zoneinfo import ZoneInfo

    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


def _told(cfg: Config, row: dict[str, object]) -> str:
    """Who has been told so far: the roles up to the alert's escalation level."""
    from postwatch.alerts import routing

    try:
        account = cfg.account(str(row["account"]))
    except KeyError:
        return "-"
    ladder = routing.ladder(cfg, account, str(row["concern"]))
    level = int(str(row["level"]))
    roles = [r for step in ladder[: level + 1] for r in step]
    return ", ".join(dict.fromkeys(roles)) or "-"
