"""CLI: ``postwatch quota``, ``postwatch space``, ``postwatch hook quota-warning``,
``postwatch campaign check``."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from postwatch.cli_kit import DEFAULT_CONFIG_PATH
from postwatch.cli_kit import ConfigOption as ConfigOpt

if TYPE_CHECKING:
    from postwatch.config import Config



def human(n: float | int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    sign = "-" if value < 0 else ""
    value = abs(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    return f"{sign}{value:.1f} TB"  # pragma: no cover


def until(iso: str | None, now: datetime) -> str:
    if not iso:
        return "-"
    delta = datetime.fromisoformat(iso) - now
    secs = delta.total_seconds()
    if secs <= 0:
        return "now"
    days, rest = divmod(int(secs), 86400)
    hours = rest // 3600
    if days >= 1:
        return f"{days}d {hours}h"
    return f"{hours}h {rest % 3600 // 60}m"


def _full_text(row: dict[str, Any], now: datetime) -> str:
    status = row.get("forecast")
    if status == "full":
        return "full"
    if status in ("not growing", "too few readings", None) or not row.get("full_at"):
        return status or "-"
    lo, hi = row.get("full_at_range") or [None, None]
    rng = f" ({until(lo, now)} .. {until(hi, now) if hi else 'never'})"
    return f"in {until(row['full_at'], now)}{rng}"


def _accounts(cfg: Config, account: list[str] | None) -> list[str] | None:
    from postwatch.cli_kit import fail

    if not account:
        return None
    known = {a.id for a in cfg.accounts}
    for a in account:
        if a not in known:
            fail(f"unknown account {a!r} (accounts: {', '.join(sorted(known)) or 'none'})", 2)
    return list(account)


def quota(
    config: ConfigOpt = DEFAULT_CONFIG_PATH,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False,
    poll: Annotated[bool, typer.Option("--poll", help="read every source now first")] = False,
    account: Annotated[
        list[str] | None, typer.Option("--account", "-a", help="only this account (repeatable)")
    ] = None,
) -> None:
    """Mailbox quotas: used, limit, percent, growth per day and time until full."""
    from postwatch.capacity.core import poll_mailboxes, quota_rows
    from postwatch.capacity.sources import targets_from_config
    from postwatch.cli_kit import fail, open_config, open_store
    from postwatch.store import StoreUnavailable

    cfg = open_config(config)
    accounts = _accounts(cfg, account)
    db = open_store(cfg)
    targets = targets_from_config(cfg, accounts)
    try:
        if poll:
            poll_mailboxes(cfg, db, accounts=accounts)
        with db.session(readonly=True) as s:
            rows = quota_rows(cfg, s, targets)
    except StoreUnavailable as exc:
        fail(f"database unavailable: {exc}", 3)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        typer.echo("no mailbox has a quota source configured ([accounts.mailboxes] quota = ...)")
        return
    now = datetime.now(UTC)
    head = f"{'MAILBOX':<32} {'SOURCE':<8} {'USED':>10} {'LIMIT':>10} {'%':>6} "
    head += f"{'GROWTH/DAY':>11}  FULL"
    typer.echo(head)
    for r in rows:
        if r["error"]:
            typer.secho(
                f"{r['mailbox']:<32} {r['source']:<8} ERROR: {r['error']}",
                fg=typer.colors.RED,
            )
            continue
        pct = f"{r['percent']:.1f}" if r["percent"] is not None else "-"
        growth = human(r["growth_bytes_per_day"]) if r["growth_bytes_per_day"] else "-"
        stale = "  (stale reading)" if r.get("stale") else ""
        typer.echo(
            f"{r['mailbox']:<32} {r['source']:<8} {human(r['used_bytes']):>10} "
            f"{human(r['limit_bytes']):>10} {pct:>6} {growth:>11}  {_full_text(r, now)}{stale}"
        )


def space(
    account: Annotated[str, typer.Option("--account", "-a", help="the account to scan")],
    config: ConfigOpt = DEFAULT_CONFIG_PATH,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    largest: Annotated[int, typer.Option(help="how many largest files and folders")] = 10,
    record: Annotated[bool, typer.Option(help="store the reading (history, conditions)")] = True,
) -> None:
    """What fills an account's sites: a breakdown by category, the largest files and folders."""
    from postwatch.capacity.core import record_site_reports, site_reports
    from postwatch.cli_kit import fail, open_config, open_store
    from postwatch.store import StoreUnavailable

    cfg = open_config(config)
    _accounts(cfg, [account])
    acc = cfg.account(account)
    if not acc.sites:
        fail(f"account {account!r} has no [[accounts.sites]] to scan", 2)
    db = open_store(cfg)
    try:
        with db.session(readonly=True) as s:
            reports = site_reports(cfg, s, acc, largest=largest)
        if record:
            with db.session() as s:
                record_site_reports(s, cfg, acc, reports)
    except StoreUnavailable as exc:
        fail(f"database unavailable: {exc}", 3)
    if as_json:
        typer.echo(json.dumps({"account": account, "sites": reports}, indent=2))
        return
    for rep in reports:
        lim = rep["limit_bytes"]
        typer.echo(f"{rep['root']}  ({rep['files']} files, {rep['seconds']:.2f}s)")
        typer.echo(
            f"  total {human(rep['total_bytes'])}"
            + (f" of {human(lim)} ({rep['percent']:.1f}%)" if lim else "")
        )
        for name, size in sorted(rep["categories"].items(), key=lambda kv: -kv[1]):
            if size:
                share = 100.0 * size / rep["total_bytes"] if rep["total_bytes"] else 0
                typer.echo(f"  {name:<10} {human(size):>10}  {share:5.1f}%")
        if lim:
            typer.echo(
                f"  package: {human(rep['package_used_bytes'])} used of {human(lim)} "
                f"(mail outside the site {human(rep['mail_outside_bytes'])}), "
                f"free {human(rep['free_bytes'])}"
            )
            if rep.get("mail_room_bytes") is not None:
                typer.echo(
                    f"  mail can use at most {human(rep['mail_room_bytes'])}: "
                    "what the site leaves of the package"
                )
        if rep["largest"]:
            typer.echo("  largest files:")
            for f in rep["largest"]:
                typer.echo(f"    {human(f['bytes']):>10}  {f['category']:<9} {f['path']}")
        if rep["largest_dirs"]:
            typer.echo("  largest folders:")
            for d in rep["largest_dirs"]:
                typer.echo(f"    {human(d['bytes']):>10}  {d['path']}/")
        if rep["error_count"]:
            typer.secho(f"  {rep['error_count']} unreadable entries, e.g.:", fg=typer.colors.RED)
            for e in rep["errors"][:5]:
                typer.echo(f"    {e}")


hook_app = typer.Typer(help="Entry points for mail-server hooks.", no_args_is_help=True)


@hook_app.command("quota-warning")
def hook_quota_warning(
    user: Annotated[str, typer.Option(help="the Dovecot user (%u)")],
    percent: Annotated[float, typer.Option(help="the level crossed, in percent")],
    config: ConfigOpt = DEFAULT_CONFIG_PATH,
    strict: Annotated[
        bool,
        typer.Option(
            help="test the wiring by hand: recorded as a hook_test event, not as a reading "
            "(nobody is alerted); exit 1 when it does not reach postwatch"
        ),
    ] = False,
) -> None:
    """For Dovecot's quota_warning script: record that USER crossed PERCENT.

    Posts to the running postwatch (loopback or bearer token); if it is not reachable, writes
    to the store directly. Exits 0 even when both fail (Dovecot must never be held up), with
    the reason on stderr, which Dovecot puts in its log as an error. --strict is a wiring
    test: it goes the same way but records only a hook_test event (no reading, no alert) and
    exits 1 when it could not reach postwatch. Success is printed on stdout.
    """
    from postwatch.capacity.hook import HookResult, post, store_directly
    from postwatch.config import ConfigError, load_config
    from postwatch.store import StoreUnavailable, database_from_config

    def done(res: HookResult) -> None:
        where = "postwatch" if res.via == "http" else "the postwatch store"
        if res.ok and strict:
            typer.echo(
                f"postwatch: quota-warning wiring ok: {where} took the test for {user} "
                "(a hook_test event: no reading recorded, nobody alerted)"
            )
            raise typer.Exit(0)
        if res.ok:
            kinds = ", ".join(res.events) or "no new event (already said)"
            # stdout: Dovecot logs a script's stderr as errors, so success stays off stderr
            typer.echo(f"postwatch: quota-warning {user} {percent:g}%: {where}: {kinds}")
            raise typer.Exit(0)
        typer.echo(
            f"postwatch: quota-warning {user} {percent:g}%: NOT RECORDED: {res.message}", err=True
        )
        raise typer.Exit(1 if strict else 0)

    if not 0 <= percent <= 1000 or any(c.isspace() or ord(c) < 32 for c in user) or not user:
        done(HookResult(False, "none", [], "bad --user or --percent"))
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        done(HookResult(False, "none", [], f"config: {exc}"))
    first = post(cfg, user, percent, test=strict)
    if first.ok:
        done(first)
    try:
        db = database_from_config(cfg)
        db.migrate()
        res = store_directly(cfg, db, user, percent, test=strict)
    except (StoreUnavailable, OSError) as exc:
        res = HookResult(False, "store", [], f"{first.message}; store: {exc}")
    except Exception as exc:  # never a traceback into Dovecot's log
        res = HookResult(False, "store", [], f"{first.message}; store: {type(exc).__name__}")
    done(res)


campaign_app = typer.Typer(help="Campaign readiness.", no_args_is_help=True)


@campaign_app.command("check")
def campaign_check(
    account: Annotated[str, typer.Option("--account", "-a")],
    expected_submissions: Annotated[int, typer.Option(min=0, help="form submissions expected")],
    days: Annotated[float, typer.Option(min=0, help="how long the campaign runs")],
    avg_message_kb: Annotated[
        float, typer.Option(min=0, help="average size of one lead mail, KB")
    ] = 30.0,
    config: ConfigOpt = DEFAULT_CONFIG_PATH,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Does the campaign fit in the mailboxes and the package? Exit 1 when it does not."""
    from postwatch.capacity.campaign import CampaignPlan, check_campaign
    from postwatch.cli_kit import fail, open_config, open_store
    from postwatch.store import StoreUnavailable

    cfg = open_config(config)
    _accounts(cfg, [account])
    db = open_store(cfg)
    plan = CampaignPlan(account, expected_submissions, days, avg_message_kb)
    try:
        with db.session(readonly=True) as s:
            res = check_campaign(cfg, s, plan)
    except StoreUnavailable as exc:
        fail(f"database unavailable: {exc}", 3)
    if as_json:
        typer.echo(json.dumps(res, indent=2))
    else:
        typer.echo(
            f"campaign for {account}: {expected_submissions} submissions over {days:g} days, "
            f"~{avg_message_kb:g} KB each = {human(res['campaign_bytes_per_mailbox'])} per mailbox"
        )
        for b in res["mailboxes"]:
            if b.get("fits") is None:
                typer.secho(f"  ?  {b['mailbox']}: unknown: {b['problem']}", fg=typer.colors.RED)
                continue
            mark = "ok " if b["fits"] else "NO "
            lim = b.get("limit_bytes")
            line = (
                f"  {mark} {b['mailbox']}: used {human(b['used_bytes'])} of {human(lim)}, "
                f"campaign {human(b['campaign_bytes'])} + normal {human(b['normal_bytes'])}"
            )
            if lim:
                line += f" -> {b['end_percent']:.1f}%, headroom {human(b['headroom_bytes'])}"
            typer.secho(line, fg=None if b["fits"] else typer.colors.RED)
        p = res["package"]
        if p is not None:
            mark = "ok " if p["fits"] else "NO "
            typer.secho(
                f"  {mark} package {p['root']}: used {human(p['used_bytes'])} of "
                f"{human(p['limit_bytes'])}, needs {human(p['need_bytes'])} -> "
                f"{p['end_percent']:.1f}%, headroom {human(p['headroom_bytes'])}",
                fg=None if p["fits"] else typer.colors.RED,
            )
        typer.echo("fits" if res["fits"] else "DOES NOT FIT (or unknown): see above")
    sys.stdout.flush()
    raise typer.Exit(0 if res["fits"] else 1)


def register(app: typer.Typer) -> None:
    app.command("quota")(quota)
    app.command("space")(space)
    app.add_typer(hook_app, name="hook")
    app.add_typer(campaign_app, name="campaign")
