"""``postwatch investigate`` end to end through the real CLI: exact numbers on the JSON report."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from postwatch.cli import app
from postwatch.forensics import InvestigateOptions, investigate, render_csv, render_html
from tests.forensics import GYM_QUERY

LOGS = Path(__file__).parent.parent / "fixtures" / "logs"
runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, ["investigate", "--quiet", *args])


def gym_args(d: Path, out: Path, *extra: str) -> list[str]:
    # mail logs deliberately out of order, one by a glob; access logs by a glob
    return [
        "--mail-log",
        str(d / "mail.log"),
        "--mail-log",
        str(d / "mail.log.2.gz"),
        "--mail-log",
        str(d / "mail.log.1"),
        "--access-log",
        str(d / "other_vhosts_access.log*"),
        "--form-path",
        "/contact",
        "--mailbox",
        "info@gym.example",
        "--vhost",
        "www.gym.example",
        "--since",
        "2026-10-24",
        "--until",
        "2026-10-27",
        "--timezone",
        "Europe/Berlin",
        "--year",
        "2026",
        "--json",
        str(out / "r.json"),
        "--html",
        str(out / "r.html"),
        "--csv",
        str(out / "r.csv"),
        *extra,
    ]


def test_gym_incident_numbers(gym: Path, tmp_path: Path) -> None:
    res = run(*gym_args(gym, tmp_path, "--form-sender", "wordpress@gym.example"))
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["submissions"]["total"] == 7
    assert d["submissions"]["rejected"] == 1
    assert d["submissions"]["by_status"] == {"200": 1, "302": 6, "403": 1}
    m = d["mail"]
    assert (m["form_messages"], m["delivered"], m["bounced"], m["pending"]) == (6, 3, 2, 1)
    assert m["by_reason"] == {"mailbox_full": 3}
    assert m["first_mailbox_full"] == "2026-10-24T12:00:05+02:00"
    assert m["last_mailbox_full"] == "2026-10-26T07:00:01+01:00"  # after the DST switch
    assert m["mailbox_full_failures"] == 7
    assert m["rejected_at_rcpt"] == 1 and m["dovecot_quota_lines"] == 1
    assert d["mailbox"]["received_before_full"] == {"form": 1, "other": 1}
    assert d["mailbox"]["full_episodes"] == [
        {
            "start": "2026-10-20T08:00:02+02:00",
            "end": "2026-10-20T08:00:02+02:00",
            "failures": 1,
            "recovered": "2026-10-20T09:10:02+02:00",
        },
        {
            "start": "2026-10-24T12:00:05+02:00",
            "end": "2026-10-26T07:00:01+01:00",
            "failures": 7,
            "recovered": "2026-10-26T08:00:01+01:00",
        },
    ]
    assert d["submitters"]["recovered"] == [
        "ben@visitor.example",
        "carla@visitor.example",
        "dario@visitor.example",
    ]
    by_id = {x["queue_id"]: x for x in d["messages"]}
    # D arrived in the repeated hour of the DST switch (CET, +01:00)
    assert by_id["D4E5F6A7B8"]["arrived"] == "2026-10-25T02:15:01+01:00"
    assert by_id["D4E5F6A7B8"]["outcome"] == "pending"
    assert by_id["B2C3D4E5F6"]["outcome"] == "bounced"  # expired: reason of the last deferral
    assert by_id["B2C3D4E5F6"]["reason"] == "mailbox_full" and by_id["B2C3D4E5F6"]["attempts"] == 2
    # the reused queue id: A on Oct 24 and F on Oct 26 are two messages, both delivered
    reused = [x for x in d["messages"] if x["queue_id"] == "A1B2C3D4E5"]
    assert [x["arrived"] for x in reused] == [
        "2026-10-24T10:00:03+02:00",
        "2026-10-26T09:30:00+01:00",
    ]
    assert [x["other_recipients"] for x in reused] == [
        ["anna@visitor.example"],
        ["finn@visitor.example"],
    ]
    # inputs: hashes of the bytes on disk, lines and unparsed lines per file
    inputs = {Path(i["path"]).name: i for i in d["inputs"]}
    for name, i in inputs.items():
        assert i["sha256"] == hashlib.sha256((gym / name).read_bytes()).hexdigest()
    assert {n: (i["lines"], i["unparsed"]) for n, i in inputs.items()} == {
        "mail.log": (25, 0),
        "mail.log.1": (31, 1),
        "mail.log.2.gz": (22, 1),
        "other_vhosts_access.log": (5, 1),
        "other_vhosts_access.log.1.gz": (9, 0),
    }
    assert len(d["answer"]) == 3
    assert "submitted 7 times" in d["answer"][0]
    assert "Only 3 of the 6 form mails" in d["answer"][1]
    # hourly chart buckets of the window: 24 + 25 (DST) + 24 hours
    assert len(d["hourly"]) == 73
    assert sum(h["submissions"] for h in d["hourly"]) == 7
    assert sum(h["delivered"] for h in d["hourly"]) == 3
    assert sum(h["mailbox_full"] for h in d["hourly"]) == 7
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert len(rows) == 6
    assert sorted(r["outcome"] for r in rows) == [
        "bounced",
        "bounced",
        "delivered",
        "delivered",
        "delivered",
        "pending",
    ]


def test_time_matching_without_form_sender(gym: Path, tmp_path: Path) -> None:
    res = run(*gym_args(gym, tmp_path))
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["query"]["matching"] == "time"
    m = d["mail"]
    assert (m["form_messages"], m["delivered"], m["bounced"], m["pending"]) == (6, 3, 2, 1)
    assert d["submissions"]["unmatched"] == 1  # the POST of Oct 25 20:00 has no mail
    assert d["mailbox"]["received_before_full"] == {"form": 1, "other": 1}
    assert m["mailbox_full_failures"] == 7 and len(d["mailbox"]["full_episodes"]) == 2
    assert d["submitters"]["recovered"] == [
        "ben@visitor.example",
        "carla@visitor.example",
        "dario@visitor.example",
    ]
    assert any("matched to form submissions by time" in q for q in d["unanswered"])


def test_exim_and_combined_log(tmp_path: Path) -> None:
    res = run(
        "--mail-log",
        str(LOGS / "exim_mainlog"),
        "--access-log",
        str(LOGS / "access_combined.log"),
        "--form-path",
        "/signup",
        "--mailbox",
        "studio@pilates.example",
        "--form-sender",
        "noreply@pilates.example",
        "--timezone",
        "Europe/Berlin",
        "--json",
        str(tmp_path / "e.json"),
    )
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "e.json").read_text())
    assert (d["submissions"]["total"], d["submissions"]["rejected"]) == (3, 1)
    m = d["mail"]
    assert (m["form_messages"], m["delivered"], m["bounced"], m["pending"]) == (3, 1, 1, 1)
    assert m["by_reason"] == {"mailbox_full": 2}
    assert m["mailbox_full_failures"] == 4 and m["rejected_at_rcpt"] == 1
    assert d["mailbox"]["full_episodes"] == [
        {
            "start": "2026-03-02T11:00:01+01:00",
            "end": "2026-03-06T12:00:01+01:00",
            "failures": 4,
            "recovered": "2026-03-06T14:00:01+01:00",
        }
    ]
    assert d["mailbox"]["received_before_full"] == {"form": 1, "other": 0}
    assert d["submitters"]["recovered"] == ["ivy@visitor.example", "noah@visitor.example"]


def test_rfc3339_postfix_log(tmp_path: Path) -> None:
    src = (LOGS / "gym" / "mail.log.1").read_text()
    months = {"Oct": "10"}

    def iso(m: re.Match[str]) -> str:
        day, hms = int(m.group(2)), m.group(3)
        return f"2026-{months[m.group(1)]}-{day:02d}T{hms}.000000+00:00"

    converted = re.sub(r"^(Oct) ([ \d]\d) (\d\d:\d\d:\d\d)", iso, src, flags=re.M)
    (tmp_path / "mail.log").write_text(converted)
    res = run(
        "--mail-log",
        str(tmp_path / "mail.log"),
        "--form-path",
        "/contact",
        "--mailbox",
        "info@gym.example",
        "--form-sender",
        "wordpress@gym.example",
        "--json",
        str(tmp_path / "r.json"),
        "--timezone",
        "UTC",
    )
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "r.json").read_text())
    # B and D still pending when this log ends, C bounced
    m = d["mail"]
    assert (m["form_messages"], m["delivered"], m["bounced"], m["pending"]) == (3, 0, 1, 2)
    assert m["first_mailbox_full"] == "2026-10-24T12:00:05+00:00"


def test_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    hostile = "<script>alert(1)</script>@evil.example"
    log = (LOGS / "gym" / "mail.log.1").read_text().replace("ben@visitor.example", hostile)
    (tmp_path / "mail.log").write_text(log)
    res = run(
        "--mail-log",
        str(tmp_path / "mail.log"),
        "--form-path",
        '/contact"><b>x',
        *GYM_QUERY,
        "--json",
        str(tmp_path / "r.json"),
        "--html",
        str(tmp_path / "r.html"),
        "--csv",
        str(tmp_path / "r.csv"),
    )
    assert res.exit_code == 0, res.output
    html = (tmp_path / "r.html").read_text()
    d = json.loads((tmp_path / "r.json").read_text())
    assert any("<script>" in a for a in d["submitters"]["recovered"])  # it is in the data...
    assert "<script" not in html  # ...but never as markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '"><b>' not in html
    # no external fetches: no src/href/url()/@import anywhere, a CSP that forbids them
    for pattern in (r"\bsrc\s*=", r"\bhref\s*=", r"url\(", r"@import", r"<script", r"<link"):
        assert not re.search(pattern, html, re.I), pattern
    assert "default-src 'none'" in html and "<svg" in html


def test_csv_cells_cannot_become_formulas(tmp_path: Path) -> None:
    log = (
        (LOGS / "gym" / "mail.log.1")
        .read_text()
        .replace("ben@visitor.example", '=HYPERLINK("http://x")@evil.example')
    )
    (tmp_path / "mail.log").write_text(log)
    opts = InvestigateOptions(
        access_logs=[],
        mail_logs=[str(tmp_path / "mail.log")],
        form_paths=["/contact"],
        mailbox="info@gym.example",
        form_sender="wordpress@gym.example",
        timezone="UTC",
        year=2026,
    )
    rep = investigate(opts)
    rows = list(csv.reader(io.StringIO(render_csv(rep))))
    cells = [c for row in rows[1:] for c in row]
    assert not any(c.startswith("=") for c in cells)
    assert any(c.lower().startswith("'=hyperlink") for c in cells)
    assert "<svg" in render_html(rep)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mail-log", "/nonexistent/mail.log"], "/nonexistent/mail.log: no such file"),
        (["--mail-log", "/nonexistent/*.gz"], "/nonexistent/*.gz: no file matches"),
        (["--mail-log", "LOGS/gym/mail.log", "--since", "24.10.2026"], "--since: not a date"),
        (["--mail-log", "LOGS/gym/mail.log", "--timezone", "Mars/Olympus"], "unknown time zone"),
        (["--access-log", "LOGS/gym/mail.log"], "looks like a mail log"),
        (["--mail-log", "LOGS/access_combined.log"], "not a mail log postwatch can read"),
        (["--access-log", "LOGS/access_combined.log", "--access-format", "%h %l"], "LogFormat"),
        (
            ["--mail-log", "LOGS/gym/mail.log", "--since", "2026-10-27", "--until", "2026-10-24"],
            "--since must be before --until",
        ),
    ],
)
def test_errors_are_messages_not_tracebacks(tmp_path: Path, args: list[str], message: str) -> None:
    args = [a.replace("LOGS", str(LOGS)) for a in args]
    res = run(
        *args,
        "--form-path",
        "/c",
        "--mailbox",
        "info@gym.example",
        "--json",
        str(tmp_path / "r.json"),
    )
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "r.json").exists()


def test_corrupt_gzip_names_file_and_line(tmp_path: Path) -> None:
    data = gzip.compress((LOGS / "gym" / "mail.log.1").read_bytes() * 50)
    bad = tmp_path / "mail.log.3.gz"
    bad.write_bytes(data[: len(data) // 2])
    res = run(
        "--mail-log",
        str(bad),
        "--form-path",
        "/c",
        "--mailbox",
        "info@gym.example",
        "--year",
        "2026",
        "--json",
        str(tmp_path / "r.json"),
    )
    assert res.exit_code == 2
    assert f"{bad}: line " in res.output and "cannot read" in res.output
    assert "Traceback" not in res.output


def test_unwritable_output_is_a_message(gym: Path, tmp_path: Path) -> None:
    res = run(
        "--mail-log",
        str(gym / "mail.log"),
        "--form-path",
        "/c",
        "--mailbox",
        "i@x.example",
        "--year",
        "2026",
        "--json",
        str(tmp_path / "no" / "such" / "dir" / "r.json"),
    )
    assert res.exit_code == 1
    assert "cannot write the JSON report" in res.output


def test_empty_and_missing_inputs() -> None:
    res = run("--mailbox", "i@x.example", "--form-path", "/c", "--json", "/dev/null")
    assert res.exit_code == 2 and "at least one --access-log or --mail-log" in res.output


def test_rotated_files_in_any_order_give_the_same_report(gym: Path, tmp_path: Path) -> None:
    outs = []
    for order in (
        ("mail.log", "mail.log.1", "mail.log.2.gz"),
        ("mail.log.2.gz", "mail.log.1", "mail.log"),
    ):
        out = tmp_path / f"{order[0]}.json"
        args = [x for name in order for x in ("--mail-log", str(gym / name))]
        res = run(
            *args,
            "--form-path",
            "/contact",
            *GYM_QUERY,
            "--json",
            str(out),
        )
        assert res.exit_code == 0, res.output
        d = json.loads(out.read_text())
        outs.append((d["mail"], d["mailbox"], d["submitters"]))
    assert outs[0] == outs[1]
    shutil.rmtree(gym)


def test_answer_says_whether_it_happened_before(gym: Path, tmp_path: Path) -> None:
    res = run(*gym_args(gym, tmp_path, "--form-sender", "wordpress@gym.example"))
    assert res.exit_code == 0, res.output
    third = json.loads((tmp_path / "r.json").read_text())["answer"][2]
    assert third.startswith("The mailbox refused mail as full 7 times from Sat 24 Oct 2026 12:00")
    assert "it had been full once before, on Tue 20 Oct 2026 08:00 CEST" in third
    assert "the 3 people whose sign-up did not arrive are listed below" in third
