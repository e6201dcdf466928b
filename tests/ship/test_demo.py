"""`postwatch demo --fast --json` as a person (or CI) runs it: a subprocess, no configuration.

The figures asserted are the demo's own measurements: what its SMTP servers kept, what its
webhooks received, what the store recorded (notification_sent events).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    work = tmp_path_factory.mktemp("demo") / "run"
    res = subprocess.run(
        [sys.executable, "-m", "postwatch", "demo", "--fast", "--json", "--dir", str(work)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout), res.stderr, work


def test_every_lead_is_kept_at_the_fallback_once_then_in_the_mailbox_once(
    demo: tuple[dict, str, Path],
) -> None:
    summary, _story, _work = demo
    leads = {f"lead{i:02d}@visitor.example" for i in range(1, 43)}
    assert summary["signups"] == 42 and summary["accepted"] == 42
    assert summary["lost"] == 0
    assert summary["fallback_copies"] == dict.fromkeys(leads, 1)
    assert summary["mailbox_copies"] == dict.fromkeys(leads, 1)
    assert summary["refused_552"] >= 42  # every lead was first refused as mailbox full


def test_one_alert_to_the_owner_one_escalation_to_the_hoster_one_resolved_each(
    demo: tuple[dict, str, Path],
) -> None:
    summary, _story, _work = demo
    # what the webhooks received
    owner, hoster = summary["notifications"]["owner"], summary["notifications"]["hoster"]
    assert len(owner) == 2 and len(hoster) == 2, summary["notifications"]
    assert "mailbox info@gym.example is full" in owner[0] and not owner[0].startswith("Resol")
    assert owner[1].startswith("Resolved: ")
    assert hoster[0].startswith("Escalated: ") and hoster[1].startswith("Resolved: ")
    assert set(summary["notifications"]) == {"owner", "hoster"}
    assert summary["people_told"] == 2
    # what the store recorded about them
    assert summary["notification_kinds"] == {
        "owner": {"fired": 1, "resolved": 1},
        "hoster": {"escalated": 1, "resolved": 1},
    }


def test_the_report_is_written_and_the_last_line_sums_it_up(
    demo: tuple[dict, str, Path],
) -> None:
    summary, story, work = demo
    report = Path(summary["report"])
    assert report.parent == work and report.is_file()
    html = report.read_text(encoding="utf-8")
    assert "info@gym.example" in html and "<svg" in html
    rep = json.loads(Path(summary["report_json"]).read_text(encoding="utf-8"))
    assert rep["submissions"]["total"] == 42
    assert rep["mail"]["delivered"] == 42  # each lead once, after the mailbox was emptied
    assert any(n["who"].endswith("(hoster)") for n in rep["history"]["notifications"]
               if n["kind"] == "notification_sent")
    last = story.strip().splitlines()[-1]
    assert last == f"42 sign-ups, 0 lost, 2 people told, report: {report}"


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("mine")
    res = subprocess.run(
        [sys.executable, "-m", "postwatch", "demo", "--fast", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert res.returncode == 2 and "not empty" in res.stderr
    assert (tmp_path / "x").read_text() == "mine"
