"""The gym's incident, replayed against real parts on loopback, measured as it happens.

States, in order (each a ``step`` in the narration; a step that does not happen in time stops the
demo with :class:`DemoFailed` naming it, and the work folder is kept for a look):

1. start: the mailbox server (small quota), the fallback server, the webhook receiver and a real
   ``postwatch serve`` subprocess on a generated config and a fresh SQLite store;
2. the mailbox fills with everyday mail until its server answers ``552 5.2.2``;
3. the campaign: ``signups`` sign-ups posted to ``/f/contact``;
4. every sign-up is stored and a copy is at the fallback address;
5. the owner is told; nobody acknowledges within ``escalate_after``: the hoster is told;
6. the owner empties the mailbox: every held sign-up is delivered to it;
7. "resolved" reaches everyone who was told;
8. the service stops, ``postwatch investigate`` writes the HTML report.

Guarantees: every figure in the summary is counted from what the servers received, what the
webhooks got and what the store recorded, never assumed. Nothing outside the work folder is
written, nothing listens on anything but 127.0.0.1, and every process and thread started is
stopped before :func:`run_demo` returns (also on failure or Ctrl-C).
"""

from __future__ import annotations

import contextlib
import email.policy
import json
import os
import secrets
import signal
import smtplib
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from postwatch.demo.servers import (
    FallbackServer,
    Hook,
    MailboxServer,
    WebhookReceiver,
    free_port,
)

ACCOUNT = "gym"
MAILBOX = "info@gym.example"
FALLBACK = "owner@private.example"
SENDER = "postwatch@hoster.example"
FORM_PATH = "/f/contact"


class DemoFailed(Exception):
    """A step of the incident did not happen in time (the message names it)."""


@dataclass(frozen=True)
class Pace:
    """How fast the incident is replayed (the real one took a weekend)."""

    signups: int
    campaign_seconds: float  # the sign-ups are spread over this long
    filler_pause: float  # between two everyday mails that fill the mailbox
    escalate_after: str
    full_retry_every: str
    flap_hold: str
    poll_interval: str
    pause: float  # a breath between steps, for a person to read
    settle: float  # how long to watch for extra messages at the end
    timeout: float  # the most any one step may take


NORMAL = Pace(42, 30.0, 0.6, "25s", "8s", "8s", "500ms", 3.0, 6.0, 120.0)
FAST = Pace(42, 2.0, 0.0, "3s", "3s", "1s", "200ms", 0.0, 2.0, 60.0)


@dataclass
class Summary:
    signups: int = 0
    accepted: int = 0
    lost: int = 0
    #: lead -> copies at the fallback (only leads with at least one)
    fallback_copies: dict[str, int] = field(default_factory=dict)
    #: lead -> copies in the mailbox after it was emptied
    mailbox_copies: dict[str, int] = field(default_factory=dict)
    refused_552: int = 0
    #: webhook path ("owner", "hoster") -> titles received, in order
    notifications: dict[str, list[str]] = field(default_factory=dict)
    #: contact role -> notification kind -> count, from the store's notification_sent events
    notification_kinds: dict[str, dict[str, int]] = field(default_factory=dict)
    people_told: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    report: str = ""
    report_json: str = ""
    workdir: str = ""
    seconds: float = 0.0

    def last_line(self) -> str:
        return (
            f"{self.signups} sign-ups, {self.lost} lost, {self.people_told} people told, "
            f"report: {self.report}"
        )

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


class Narrator:
    """Prints the story with the time since the start; quiet when only JSON is wanted."""

    def __init__(self, console: Console, started: float) -> None:
        self.console = console
        self.started = started

    def _t(self) -> str:
        return f"[dim]{time.monotonic() - self.started:6.1f}s[/]"

    def step(self, text: str) -> None:
        self.console.print(f"\n{self._t()} [bold cyan]{escape(text)}[/]")

    def fact(self, text: str, style: str = "") -> None:
        body = escape(text)
        self.console.print(f"{self._t()}   {f'[{style}]{body}[/]' if style else body}")


def wait_until(cond: Callable[[], bool], timeout: float, what: str, tick: float = 0.05) -> float:
    """Wait for ``cond``; return the seconds it took, or raise DemoFailed naming ``what``."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise DemoFailed(f"{what}: not seen within {timeout:.0f} s")
        time.sleep(tick)
    return time.monotonic() - t0


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_config(
    path: Path, *, http_port: int, smtp_port: int, hooks: WebhookReceiver, pace: Pace
) -> None:
    """The gym of the issues as one config: one form, one mailbox, the owner and the hoster."""
    db = path.parent / "postwatch.db"
    path.write_text(
        f"""# written by `postwatch demo`: the gym of the incident, on loopback
[server]
listen = "127.0.0.1:{http_port}"
public_url = "http://127.0.0.1:{http_port}"
trusted_proxies = ["127.0.0.1"]

[database]
url = {_toml("sqlite:///" + str(db))}

[smtp]
host = "127.0.0.1"
port = {smtp_port}
sender = "{SENDER}"
timeout = "10s"
helo = "postwatch.hoster.example"
final = true

[delivery]
workers = 4
poll_interval = "{pace.poll_interval}"
lease = "1m"
full_retry_every = "{pace.full_retry_every}"

[intake]
rate_limit = 0

[alerts]
escalate_after = "{pace.escalate_after}"
escalation = ["owner", "hoster"]
repeat_every = "24h"
digest = "off"
flap_hold = "{pace.flap_hold}"
poll_interval = "{pace.poll_interval}"
secret = "{secrets.token_urlsafe(24)}"
retry_after = "1s"

[[accounts]]
id = "{ACCOUNT}"
name = "Sportschool Fit"

[[accounts.forms]]
id = "contact"
name = "Sign up for a trial lesson"
recipients = ["{MAILBOX}"]
fallback = ["{FALLBACK}"]

[[accounts.mailboxes]]
address = "{MAILBOX}"

[[accounts.contacts]]
name = "Marieke (owner)"
role = "owner"
channels = [{_toml(hooks.url("owner"))}]

[[accounts.contacts]]
name = "Hostingpartner ops"
role = "hoster"
channels = [{_toml(hooks.url("hoster"))}]
""",
        encoding="utf-8",
    )


def _filler(n: int, big: bool) -> bytes:
    msg = EmailMessage()
    msg["From"] = "newsletter@suppliers.example"
    msg["To"] = MAILBOX
    msg["Subject"] = f"Invoice and catalogue {n} (with attachment)"
    msg["Message-ID"] = f"<filler-{n}@suppliers.example>"
    msg.set_content("Please find our catalogue attached.\n")
    if big:
        msg.add_attachment(b"%PDF-1.4 " + b"x" * 15000, maintype="application", subtype="pdf",
                           filename=f"catalogue-{n}.pdf")
    return msg.as_bytes(policy=email.policy.SMTP)


def _post_signup(port: int, n: int) -> tuple[int, str, datetime]:
    """Post one sign-up as a visitor's browser would (through a proxy, the visitor's address in
    ``X-Forwarded-For``); return the HTTP status, the stored submission's id and the time."""
    at = datetime.now(UTC)
    fields = {
        "name": f"Visitor {n:02d}",
        "email": f"lead{n:02d}@visitor.example",
        "phone": f"+31 6 1234 {n:04d}",
        "message": "I'd like a trial lesson next week.",
    }
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{FORM_PATH}",
        data=urllib.parse.urlencode(fields).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "X-Forwarded-For": f"192.0.2.{n % 250 + 1}",
            "Origin": "https://www.gym.example",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            body = json.loads(resp.read() or b"{}")
            return int(resp.status), str(body.get("id", "")), at
    except urllib.error.HTTPError as exc:
        return int(exc.code), "", at
    except (OSError, ValueError):
        return 0, "", at


def _access_line(n: int, status: int, at: datetime) -> str:
    when = at.strftime("%d/%b/%Y:%H:%M:%S +0000")
    return (
        f'192.0.2.{n % 250 + 1} - - [{when}] "POST {FORM_PATH} HTTP/1.1" {status} 0 '
        '"https://www.gym.example/contact/" "Mozilla/5.0 (postwatch demo visitor)"\n'
    )


@contextlib.contextmanager
def _serve(config: Path, log: Path, port: int, timeout: float) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``postwatch serve`` on ``config``, up (``/healthz`` answers) when entered."""
    env = {k: v for k, v in os.environ.items() if k != "POSTWATCH_CONFIG"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "postwatch", "serve", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
    try:
        def healthy() -> bool:
            if proc.poll() is not None:
                raise DemoFailed(f"postwatch serve exited with {proc.returncode}; see {log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until(healthy, timeout, "postwatch serve answering /healthz", tick=0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _lead(reply_to: str) -> str:
    return parseaddr(reply_to)[1].lower()


def _kinds_from_store(config: Path) -> dict[str, dict[str, int]]:
    """role -> kind -> count of the store's ``notification_sent`` events (the audit trail)."""
    out = subprocess.run(
        [sys.executable, "-m", "postwatch", "events", "--config", str(config),
         "--kind", "notification_sent", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if out.returncode != 0:
        raise DemoFailed(f"postwatch events failed: {out.stderr.strip()}")
    kinds: dict[str, Counter[str]] = {}
    for line in out.stdout.splitlines():
        data = json.loads(line).get("data") or {}
        kinds.setdefault(str(data.get("role")), Counter())[str(data.get("kind"))] += 1
    return {role: dict(c) for role, c in sorted(kinds.items())}


def _investigate(config: Path, work: Path, mail_log: Path, access_log: Path) -> tuple[Path, Path]:
    html, js = work / "report.html", work / "report.json"
    out = subprocess.run(
        [sys.executable, "-m", "postwatch", "investigate",
         "--mail-log", str(mail_log), "--access-log", str(access_log),
         "--form-path", FORM_PATH, "--mailbox", MAILBOX, "--form-sender", SENDER,
         "--year", str(datetime.now(UTC).year), "--timezone", "UTC",
         "--config", str(config), "--html", str(html), "--json", str(js), "--quiet"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if out.returncode != 0:
        raise DemoFailed(f"postwatch investigate failed: {out.stderr.strip() or out.stdout}")
    return html, js


def run_demo(work: Path, pace: Pace, console: Console) -> Summary:
    """Replay the incident in ``work`` (an empty folder that is kept); return what was measured."""
    started = time.monotonic()
    say = Narrator(console, started)
    summary = Summary(signups=pace.signups, workdir=str(work))
    mail_log, access_log = work / "mail.log", work / "access.log"
    config = work / "postwatch.toml"

    say.step("Setting the scene (all on 127.0.0.1, nothing to configure)")
    fallback = FallbackServer()
    mailbox_quota = 128 * 1024  # room for the whole campaign once emptied
    mailbox = MailboxServer("gym.example", mailbox_quota, fallback.port, mail_log, "mx")
    hooks = WebhookReceiver()
    http_port = free_port()
    write_config(config, http_port=http_port, smtp_port=mailbox.port, hooks=hooks, pace=pace)
    fallback.start()
    mailbox.start()
    hooks.start()
    try:
        say.fact(f"mail server for gym.example on port {mailbox.port}: {MAILBOX}, quota "
                 f"{mailbox_quota // 1024} KB")
        say.fact(f"the owner's private mailbox ({FALLBACK}) on port {fallback.port}")
        say.fact(f"webhooks of the owner (Marieke) and the hoster on port {hooks.port}")
        t0 = time.monotonic()
        with _serve(config, work / "serve.log", http_port, pace.timeout):
            summary.timings["serve_start"] = round(time.monotonic() - t0, 2)
            say.fact(f"postwatch serve is up on http://127.0.0.1:{http_port} "
                     f"({summary.timings['serve_start']:.1f} s), config {config}")
            _play(pace, say, summary, mailbox, fallback, hooks, access_log, http_port)
        say.step("The service stops; the hoster investigates")
        summary.notification_kinds = _kinds_from_store(config)
        t0 = time.monotonic()
        html, js = _investigate(config, work, mail_log, access_log)
        summary.timings["investigate"] = round(time.monotonic() - t0, 2)
        summary.report, summary.report_json = str(html), str(js)
        _tell_report(say, js)
    finally:
        hooks.stop()
        mailbox.stop()
        fallback.stop()
    summary.seconds = round(time.monotonic() - started, 1)
    return summary


def _play(
    pace: Pace,
    say: Narrator,
    summary: Summary,
    mailbox: MailboxServer,
    fallback: FallbackServer,
    hooks: WebhookReceiver,
    access_log: Path,
    http_port: int,
) -> None:
    say.step("Friday: the gym's mailbox fills up with everyday mail")
    n = 0
    while True:  # invoices while they fit, then small mails take the last bytes until refused
        n += 1
        big = mailbox.free(MAILBOX) > len(_filler(n, True))
        try:
            with smtplib.SMTP("127.0.0.1", mailbox.port, timeout=10) as s:
                s.sendmail("newsletter@suppliers.example", [MAILBOX], _filler(n, big))
            if big:
                say.fact(f"invoice {n} arrives: mailbox at {mailbox.percent(MAILBOX):.0f}%")
                time.sleep(pace.filler_pause)
        except smtplib.SMTPDataError as exc:
            err = exc.smtp_error
            text = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
            say.fact(f"mailbox at {mailbox.percent(MAILBOX):.0f}%, the next mail is refused: "
                     f"{exc.smtp_code} {text}", "yellow")
            break
    time.sleep(pace.pause)

    say.step(f"Saturday: the spring campaign starts, {pace.signups} sign-ups on /f/contact")
    ids: dict[str, str] = {}  # lead address -> submission id
    statuses: Counter[int] = Counter()
    t_campaign = time.monotonic()
    gap = pace.campaign_seconds / max(pace.signups - 1, 1)
    # Visitors do not wait for each other: each posts at its moment, on its own connection.
    with ThreadPoolExecutor(max_workers=8) as pool, \
            open(access_log, "a", encoding="utf-8") as alog:
        pending = []
        for i in range(1, pace.signups + 1):
            pending.append((i, pool.submit(_post_signup, http_port, i)))
            if i % 7 == 0 or i == pace.signups:
                done = [f.result() for _i, f in pending if f.done()]
                say.fact(f"{i:>3} sign-ups posted, {sum(1 for d in done if d[1])} stored "
                         f"(HTTP 201), {len(_leads(fallback))} already at the owner's private "
                         "address")
            time.sleep(gap)
        for i, fut in pending:
            status, sid, at = fut.result()
            statuses[status] += 1
            alog.write(_access_line(i, status, at))
            if sid:
                ids[f"lead{i:02d}@visitor.example"] = sid
    summary.accepted = len(ids)
    summary.timings["campaign"] = round(time.monotonic() - t_campaign, 2)
    if set(statuses) - {201}:
        say.fact(f"answers other than 201: {dict(statuses)}", "red")

    say.step("Every sign-up is kept, and a copy goes where the owner can read it")
    took = wait_until(lambda: len(_leads(fallback)) >= len(ids), pace.timeout,
                      "every stored sign-up at the fallback address")
    summary.timings["fallback_after_last_signup"] = round(took, 2)
    say.fact(f"{len(_leads(fallback))} of {pace.signups} sign-ups at {FALLBACK}, the last "
             f"{took:.1f} s after the campaign's last post", "green")
    say.fact(f"the mail server answered '552 5.2.2' {mailbox.refused} times; postwatch holds "
             "each sign-up for the mailbox and retries")
    took = wait_until(lambda: bool(hooks.to("owner")), pace.timeout, "the alert to the owner")
    first = hooks.to("owner")[0]
    say.fact(f"owner's webhook: \"{first.title}\"", "bold")

    say.step(f"Nobody acknowledges within {pace.escalate_after}: the hoster is told")
    wait_until(lambda: bool(hooks.to("hoster")), pace.timeout + _seconds(pace.escalate_after),
               "the escalation to the hoster")
    esc = hooks.to("hoster")[0]
    summary.timings["escalation_after_owner"] = round((esc.at - first.at).total_seconds(), 2)
    say.fact(f"hoster's webhook, {summary.timings['escalation_after_owner']:.1f} s after the "
             f"owner's: \"{esc.title}\"", "bold")
    time.sleep(pace.pause)

    say.step("Monday: the owner deletes old mail; the mailbox has room again")
    mailbox.empty(MAILBOX)
    say.fact(f"mailbox at {mailbox.percent(MAILBOX):.0f}%")
    t_empty = time.monotonic()
    took = wait_until(lambda: len(_leads(mailbox)) >= len(ids),
                      pace.timeout + _seconds(pace.full_retry_every),
                      "every held sign-up delivered to the mailbox")
    summary.timings["delivered_after_emptying"] = round(took, 2)
    say.fact(f"{len(_leads(mailbox))} held sign-ups delivered to {MAILBOX} within {took:.1f} s "
             f"(retry every {pace.full_retry_every}); mailbox at {mailbox.percent(MAILBOX):.0f}%",
             "green")

    say.step("Everyone who was told hears that it is over")
    wait_until(
        lambda: all(_resolved(hooks, who) for who in ("owner", "hoster")),
        pace.timeout + _seconds(pace.flap_hold), "'resolved' to the owner and the hoster",
    )
    summary.timings["resolved_after_emptying"] = round(time.monotonic() - t_empty, 2)
    for who in ("owner", "hoster"):
        say.fact(f"{who}'s webhook: \"{_resolved(hooks, who)[0].title}\"", "bold")
    time.sleep(pace.settle)  # anything more that arrives now is noise, and counted as such

    summary.refused_552 = mailbox.refused
    summary.fallback_copies = dict(Counter(_leads(fallback)))
    summary.mailbox_copies = dict(Counter(_leads(mailbox)))
    kept = set(summary.fallback_copies) | set(summary.mailbox_copies)
    summary.lost = sum(1 for i in range(1, pace.signups + 1)
                       if f"lead{i:02d}@visitor.example" not in kept)
    summary.notifications = {p.strip("/"): [h.title for h in hooks.received if h.path == p]
                             for p in sorted({h.path for h in hooks.received})}
    summary.people_told = len(summary.notifications)
    for who, titles in summary.notifications.items():
        say.fact(f"{who} got {len(titles)} message(s) in all")


def _leads(server: MailboxServer | FallbackServer) -> list[str]:
    """Lead addresses of postwatch's messages a server kept (one entry per copy)."""
    return [_lead(k.reply_to) for k in server.snapshot() if k.submission]


def _resolved(hooks: WebhookReceiver, who: str) -> list[Hook]:
    return [h for h in hooks.to(who) if h.title.startswith("Resolved")]


def _seconds(duration: str) -> float:
    from postwatch.config import parse_duration

    return parse_duration(duration).total_seconds()


def _tell_report(say: Narrator, js: Path) -> None:
    rep = json.loads(js.read_text(encoding="utf-8"))
    for sentence in rep.get("answer", []):
        say.fact(f"report: {sentence}")
