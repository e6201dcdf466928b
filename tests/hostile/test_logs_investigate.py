"""Hostile log files for ``postwatch investigate`` (issue 11, items 1 and 5).

- a 1 MB line (a delivery line with ``dsn=a,`` repeated, a NOQUEUE reject with `` from x: ;``
  repeated) kept ``investigate`` busy past 60 s: now it is one unparsed line and changes no
  number of the report;
- a gzip bomb (4.7 MB of ``.gz`` holding one 1 GiB line) took 2.1 GB of RSS and, under a memory
  limit, ended in a ``MemoryError`` traceback: now no line is held past the parsers' length cap,
  decompression is bounded per input, and the answer is a message naming the file.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from postwatch.forensics import InvestigateError, InvestigateOptions, investigate
from postwatch.forensics.inputs import GZIP_FLOOR
from postwatch.forensics.render import render_json

GYM = Path(__file__).resolve().parents[1] / "fixtures" / "logs" / "gym"
SRC = Path(__file__).resolve().parents[2] / "src"
DELIVERY = (
    "Oct 24 12:30:00 mx postfix/lmtp[999]: 9F9F9F9F9F: to=<info@gym.example>, relay=x, "
)
REJECT = "Oct 24 12:30:00 mx postfix/smtpd[999]: NOQUEUE: reject: RCPT"
MB = 1 << 20


def _gym(folder: Path, insert: list[str] | None = None, *, gz: bool = False) -> Path:
    """The gym incident's logs in ``folder``; ``insert`` lines go into the middle of mail.log
    (gzipped when ``gz``)."""
    folder.mkdir()
    for name in ("mail.log.1", "mail.log.2", "other_vhosts_access.log"):
        shutil.copy(GYM / name, folder / name)
    lines = (GYM / "mail.log").read_text().splitlines(keepends=True)
    if insert:
        half = len(lines) // 2
        lines[half:half] = [x + "\n" for x in insert]
    data = "".join(lines).encode()
    if gz:
        (folder / "mail.log.gz").write_bytes(gzip.compress(data, 1))
    else:
        (folder / "mail.log").write_bytes(data)
    return folder


def _report(folder: Path) -> dict[str, Any]:
    opts = InvestigateOptions(
        access_logs=[str(folder / "other_vhosts_access.log")],
        mail_logs=[str(p) for p in sorted(folder.glob("mail.log*"))],
        form_paths=["/contact"],
        mailbox="info@gym.example",
        form_sender="wordpress@gym.example",
        timezone="Europe/Berlin",
        year=2026,
    )
    d: dict[str, Any] = json.loads(render_json(investigate(opts)))
    inputs = d.pop("inputs")
    d.pop("generated_at", None)
    d["_lines"] = sorted((Path(i["path"]).name.removesuffix(".gz"), i["lines"]) for i in inputs)
    d["_unparsed"] = sorted(
        (Path(i["path"]).name.removesuffix(".gz"), i["unparsed"]) for i in inputs
    )
    return d


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_1mb_lines_are_unparsed_and_change_no_number(tmp_path: Path, gz: bool) -> None:
    plain = _report(_gym(tmp_path / "plain", gz=gz))
    hostile_lines = [
        DELIVERY + "dsn=a," * (MB // 6),
        REJECT + " from x: ;" * (MB // 10),
        DELIVERY + "x" * MB + ", status=deferred (452 4.2.2 Mailbox full)",
    ]
    start = time.monotonic()
    hostile = _report(_gym(tmp_path / "hostile", hostile_lines, gz=gz))
    assert time.monotonic() - start < 30  # was > 60 s for one such line; now milliseconds
    lines = dict(hostile.pop("_lines"))
    unparsed = dict(hostile.pop("_unparsed"))
    assert lines["mail.log"] == dict(plain.pop("_lines"))["mail.log"] + 3
    assert unparsed["mail.log"] == dict(plain.pop("_unparsed"))["mail.log"] + 3
    assert hostile == plain


def _bomb(path: Path, size: int) -> None:
    """A mail log line, then one line of ``size`` bytes without a newline, as concatenated
    gzip members (~1 KB of .gz per MiB): a gzip bomb that costs nothing to make."""
    member = gzip.compress(b"a" * (16 * MB), 9)
    with path.open("wb") as fh:
        fh.write(gzip.compress(b"Oct 20 07:00:00 mx postfix/qmgr[1]: ABCDEF: removed\n"))
        for _ in range(size // (16 * MB)):
            fh.write(member)


def test_a_gzip_bomb_is_refused_with_a_message_naming_the_file(tmp_path: Path) -> None:
    bomb = tmp_path / "mail.log.2.gz"
    _bomb(bomb, GZIP_FLOOR + 64 * MB)
    opts = InvestigateOptions(
        access_logs=[],
        mail_logs=[str(bomb)],
        form_paths=["/contact"],
        mailbox="info@gym.example",
        year=2026,
    )
    with pytest.raises(InvestigateError, match=r"mail\.log\.2\.gz: decompresses to more than"):
        investigate(opts)


def _limit_memory() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (1536 * MB, 1536 * MB))


def test_the_cli_answers_a_1gib_gzip_bomb_under_a_memory_limit(tmp_path: Path) -> None:
    """The issue's case through the real CLI, with 1.5 GB of address space: a message and
    exit code 2, no ``MemoryError`` traceback."""
    bomb = tmp_path / "mail.log.gz"
    _bomb(bomb, 1024 * MB)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [
            sys.executable, "-m", "postwatch", "investigate", "--quiet",
            "--mail-log", str(bomb), "--mailbox", "info@gym.example",
            "--form-path", "/contact", "--year", "2026", "--json", str(tmp_path / "r.json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_memory,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
    assert f"{bomb}: decompresses to more than" in proc.stderr
    assert "gzip bomb" in proc.stderr


def test_a_1gib_line_in_a_gzip_file_under_the_bound_is_one_unparsed_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below the decompression bound, an over-long line is skipped in bounded memory."""
    import postwatch.forensics.inputs as inputs

    monkeypatch.setattr(inputs, "GZIP_FLOOR", 2048 * MB)
    folder = _gym(tmp_path / "logs")
    bomb = folder / "mail.log.0.gz"
    member = gzip.compress(b"a" * (16 * MB), 9)
    with bomb.open("wb") as fh:
        fh.write(gzip.compress(b"Oct 20 07:00:00 mx postfix/smtp[1]: "))
        for _ in range(8):
            fh.write(member)
        fh.write(gzip.compress(b"\nOct 20 07:00:01 mx postfix/qmgr[1]: ABCDEF: removed\n"))
    d = _report(folder)
    assert dict(d["_lines"])["mail.log.0"] == 2
    assert dict(d["_unparsed"])["mail.log.0"] == 1
