"""Benchmark ``postwatch investigate`` against GoAccess, pflogsumm and ``grep -c``.

Generates (in a temporary directory, removed afterwards) a 1,000,000-line Apache combined access
log and a 1,000,000-line Postfix log of a busy hosting server (many mailboxes, spam rejects, TLS
and connection noise; a small share of form mails to a mailbox that fills up), then runs, in the
same session and on the same files:

* ``postwatch investigate`` on the access log, on the mail log (with ``--form-sender``, the fast
  path) and on the mail log without it (time matching: every message is tracked);
* ``goaccess --log-format=COMBINED -o report.json`` on the access log;
* ``pflogsumm`` on the mail log;
* ``grep -c`` on both (the floor no parser beats).

Prints the best wall time of ``--repeat`` runs (default 3: the machine may be shared), lines/s
and peak RSS (``/usr/bin/time``) per tool.  Run:
``python benchmarks/investigate.py [--lines N] [--repeat R]``.  Rates are computed from CPU time
(user + system), which another process on a shared machine disturbs far less than wall time;
wall time is shown too.  GoAccess and pflogsumm come from Debian (``apt-get install goaccess
pflogsumm``); missing tools are reported, not fatal.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    'curl/8.5.0 \\"scanner\\"',
)
PAGES = (
    "/",
    "/kurse/",
    "/preise/",
    "/contact/",
    "/wp-content/themes/gym/style.css",
    "/wp-content/uploads/2026/10/hero.jpg",
    "/wp-includes/js/jquery/jquery.min.js",
    "/favicon.ico",
    "/robots.txt",
    "/wp-login.php",
    "/feed/",
)


def gen_access(path: Path, n: int, rng: random.Random) -> None:
    t0 = 1792000000  # 2026-10-14
    with open(path, "w", encoding="utf-8") as fh:
        buf = []
        for i in range(n):
            t = time.gmtime(t0 + i * 2)
            stamp = (
                f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:"
                f"{t.tm_min:02d}:{t.tm_sec:02d} +0000"
            )
            ip = (
                f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(65536):x}"
                if i % 5 == 0
                else f"198.51.{rng.randrange(256)}.{rng.randrange(256)}"
            )
            if i % 50 == 0:
                req, status, size = "POST /contact/ HTTP/1.1", 302 if i % 700 else 403, 0
            elif i % 37 == 0:
                req, status, size = "POST /wp-login.php HTTP/1.1", 200, 4120
            else:
                req, status, size = f"GET {rng.choice(PAGES)} HTTP/1.1", 200, rng.randrange(90000)
            ua = rng.choice(AGENTS)
            buf.append(
                f'{ip} - - [{stamp}] "{req}" {status} {size} "https://www.gym.example/" "{ua}"\n'
            )
            if len(buf) >= 10000:
                fh.writelines(buf)
                buf.clear()
        fh.writelines(buf)


def gen_postfix(path: Path, n: int, rng: random.Random) -> None:
    t0 = 1792000000
    lines: list[str] = []
    out = open(path, "w", encoding="utf-8")  # noqa: SIM115
    i = 0
    sec = 0
    full = False
    while i < n:
        sec += rng.randrange(1, 4)
        t = time.gmtime(t0 + sec)
        ts = f"{MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        q = f"{rng.getrandbits(44):011X}"
        ip = f"203.0.{rng.randrange(256)}.{rng.randrange(256)}"
        pid = rng.randrange(1000, 30000)
        if sec % 40000 < 30:
            full = not full
        kind = rng.random()
        if kind < 0.15:  # spam refused by postscreen / RBL
            lines += [
                f"{ts} mx postfix/postscreen[{pid}]: CONNECT from [{ip}]:{rng.randrange(65536)} "
                f"to [192.0.2.1]:25\n",
                f"{ts} mx postfix/postscreen[{pid}]: DNSBL rank 3 for [{ip}]:"
                f"{rng.randrange(65536)}\n",
                f"{ts} mx postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from unknown[{ip}]: "
                "554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org; "
                f"from=<x{i}@spam.example> to=<user{i % 300}@hosted{i % 40}.example> proto=ESMTP "
                "helo=<spam>\n",
                f"{ts} mx postfix/smtpd[{pid}]: disconnect from unknown[{ip}] ehlo=1 mail=1 "
                "rcpt=0/1 quit=1 commands=3/4\n",
            ]
        elif kind < 0.20:  # a form mail to the gym's mailbox, copy to the visitor
            lines += [
                f"{ts} mx postfix/pickup[{pid}]: {q}: uid=33 from=<www-data>\n",
                f"{ts} mx postfix/cleanup[{pid}]: {q}: message-id=<{q}@www.gym.example>\n",
                f"{ts} mx postfix/qmgr[900]: {q}: from=<wordpress@gym.example>, size=2711, "
                "nrcpt=2 (queue active)\n",
                f"{ts} mx postfix/smtp[{pid}]: {q}: to=<v{i}@visitor.example>, relay=mx.visitor."
                "example[2001:db8::25]:25, delay=1.1, delays=0.05/0.01/0.5/0.54, dsn=2.0.0, "
                "status=sent (250 2.0.0 Ok: queued as 4XkQ1b2c3Dz9pL)\n",
            ]
            if full:
                lines.append(
                    f"{ts} mx postfix/lmtp[{pid}]: {q}: to=<info@gym.example>, relay=mx.gym."
                    "example[private/dovecot-lmtp], delay=0.2, delays=0.05/0.01/0.02/0.12, "
                    "dsn=4.2.2, status=deferred (host mx.gym.example[private/dovecot-lmtp] said: "
                    "452 4.2.2 <info@gym.example> Quota exceeded (mailbox for user is full) (in "
                    "reply to RCPT TO command))\n"
                )
            else:
                lines += [
                    f"{ts} mx postfix/lmtp[{pid}]: {q}: to=<info@gym.example>, relay=mx.gym."
                    "example[private/dovecot-lmtp], delay=0.2, delays=0.05/0.01/0.02/0.12, "
                    "dsn=2.0.0, status=sent (250 2.0.0 <info@gym.example> 3fKmJ0Wk3mXPCAAAbD8Hsg "
                    "Saved)\n",
                    f"{ts} mx postfix/qmgr[900]: {q}: removed\n",
                ]
        elif kind < 0.55:  # inbound mail for the hosted domains
            rcpt = f"user{rng.randrange(3000)}@hosted{rng.randrange(400)}.example"
            lines += [
                f"{ts} mx postfix/smtpd[{pid}]: connect from mail-{i % 97}.example.net[{ip}]\n",
                f"{ts} mx postfix/smtpd[{pid}]: Anonymous TLS connection established from "
                f"mail-{i % 97}.example.net[{ip}]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 "
                "(256/256 bits)\n",
                f"{ts} mx postfix/smtpd[{pid}]: {q}: client=mail-{i % 97}.example.net[{ip}]\n",
                f"{ts} mx postfix/cleanup[{pid}]: {q}: message-id=<{q}.{i}@example.net>\n",
                f"{ts} mx postfix/qmgr[900]: {q}: from=<news{i % 50}@example.net>, "
                f"size={rng.randrange(2000, 90000)}, nrcpt=1 (queue active)\n",
                f"{ts} mx postfix/lmtp[{pid}]: {q}: to=<{rcpt}>, relay=mx.gym.example[private/"
                "dovecot-lmtp], delay=0.3, delays=0.1/0.01/0.02/0.17, dsn=2.0.0, status=sent "
                f"(250 2.0.0 <{rcpt}> nE8hLwWk3mXPCAAAbD8Hsg Saved)\n",
                f"{ts} mx postfix/qmgr[900]: {q}: removed\n",
                f"{ts} mx postfix/smtpd[{pid}]: disconnect from mail-{i % 97}.example.net[{ip}] "
                "ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7\n",
            ]
        else:  # outbound mail of the hosted sites
            rcpt = f"c{rng.randrange(100000)}@{rng.choice(('gmail.com', 'web.de', 'gmx.de'))}"
            ok = rng.random() < 0.93
            lines += [
                f"{ts} mx postfix/submission/smtpd[{pid}]: {q}: client=unknown[{ip}], "
                f"sasl_method=PLAIN, sasl_username=user{i % 800}@hosted{i % 400}.example\n",
                f"{ts} mx postfix/cleanup[{pid}]: {q}: message-id=<{q}@hosted.example>\n",
                f"{ts} mx postfix/qmgr[900]: {q}: from=<user{i % 800}@hosted{i % 400}.example>, "
                f"size={rng.randrange(2000, 90000)}, nrcpt=1 (queue active)\n",
                f"{ts} mx postfix/smtp[{pid}]: {q}: to=<{rcpt}>, relay=mx.{rcpt.split('@')[1]}"
                f"[142.250.1.27]:25, delay=1.2, delays=0.01/0/0.5/0.7, dsn=2.0.0, status=sent "
                f"(250 2.0.0 OK {i} - gsmtp)\n"
                if ok
                else f"{ts} mx postfix/smtp[{pid}]: {q}: to=<{rcpt}>, relay=none, delay=30, "
                f"delays=0.01/0/30/0, dsn=4.4.1, status=deferred (connect to "
                f"mx.{rcpt.split('@')[1]}[142.250.1.27]:25: Connection timed out)\n",
            ]
            if ok:
                lines.append(f"{ts} mx postfix/qmgr[900]: {q}: removed\n")
        if len(lines) >= 10000:
            take = min(len(lines), n - i)
            out.writelines(lines[:take])
            i += take
            lines.clear()
    out.close()


def measure(cmd: list[str], **kw: object) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS in KiB, and an error text."""
    tfile = tempfile.NamedTemporaryFile(delete=False)  # noqa: SIM115
    tfile.close()
    start = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%U %S %M", "-o", tfile.name, *cmd],
        capture_output=True,
        text=True,
        **kw,  # type: ignore[call-overload]
    )
    wall = time.perf_counter() - start
    last = (Path(tfile.name).read_text().strip().splitlines() or ["0 0 0"])[-1].split()
    os.unlink(tfile.name)
    cpu = float(last[0]) + float(last[1])
    err = "" if proc.returncode in (0, 1) or cmd[0] == "grep" else proc.stderr[-300:]
    return wall, cpu, int(last[2]), err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--keep", help="keep the generated logs in this directory")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool; the best is shown")
    args = ap.parse_args()
    rng = random.Random(20261025)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pw-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    access, mail = work / "access.log", work / "mail.log"
    t = time.perf_counter()
    gen_access(access, args.lines, rng)
    gen_postfix(mail, args.lines, rng)
    print(
        f"generated {args.lines:,} + {args.lines:,} lines in {time.perf_counter() - t:.1f} s "
        f"({access.stat().st_size / 1e6:.0f} MB + {mail.stat().st_size / 1e6:.0f} MB)"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    py = [
        sys.executable,
        "-m",
        "postwatch",
        "investigate",
        "--quiet",
        "--timezone",
        "UTC",
        "--year",
        "2026",
        "--mailbox",
        "info@gym.example",
        "--form-path",
        "/contact",
    ]
    runs: list[tuple[str, str, list[str], dict[str, str] | None]] = [
        (
            "access",
            "postwatch investigate",
            [*py, "--access-log", str(access), "--json", str(work / "a.json")],
            env,
        ),
        (
            "access",
            "goaccess (COMBINED, JSON)",
            [
                "goaccess",
                str(access),
                "--log-format=COMBINED",
                "--no-global-config",
                "-o",
                str(work / "goaccess.json"),
            ],
            None,
        ),
        ("access", "grep -c POST", ["grep", "-c", "POST", str(access)], None),
        (
            "mail",
            "postwatch investigate --form-sender",
            [
                *py,
                "--mail-log",
                str(mail),
                "--form-sender",
                "wordpress@gym.example",
                "--json",
                str(work / "m.json"),
            ],
            env,
        ),
        (
            "mail",
            "postwatch investigate (time matching)",
            [*py, "--mail-log", str(mail), "--json", str(work / "m2.json")],
            env,
        ),
        ("mail", "pflogsumm", ["pflogsumm", str(mail)], None),
        ("mail", "grep -c status=", ["grep", "-c", "status=", str(mail)], None),
    ]
    print(
        f"\n{'log':<7}{'tool':<40}{'wall s':>8}{'CPU s':>8}{'lines/CPU s':>13}{'peak RSS MB':>13}"
    )
    results: dict[tuple[str, str], float] = {}
    for log, name, cmd, e in runs:
        if shutil.which(cmd[0]) is None and not cmd[0].startswith("/"):
            print(f"{log:<7}{name:<40}{'(not installed)':>34}")
            continue
        tries = [measure(cmd, env=e) for _ in range(max(1, args.repeat))]
        wall = min(t[0] for t in tries)
        cpu = min(t[1] for t in tries)
        rss = max(t[2] for t in tries)
        err = next((t[3] for t in tries if t[3]), "")
        rate = args.lines / max(cpu, 0.01)
        results[(log, name)] = rate
        print(
            f"{log:<7}{name:<40}{wall:>8.2f}{cpu:>8.2f}{rate:>13,.0f}{rss / 1024:>13.1f}"
            + (f"  ERROR: {err}" if err else "")
        )
    pw_a = results.get(("access", "postwatch investigate"))
    ga = results.get(("access", "goaccess (COMBINED, JSON)"))
    pw_m = results.get(("mail", "postwatch investigate --form-sender"))
    pf = results.get(("mail", "pflogsumm"))
    print()
    if pw_a and ga:
        print(f"access log: postwatch / GoAccess = {pw_a / ga:.1f}x (target >= 5x)")
    if pw_m and pf:
        print(f"mail log:   postwatch / pflogsumm = {pw_m / pf:.1f}x (target >= 3x)")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
