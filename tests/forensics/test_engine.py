"""Engine details: RCPT-time refusals of form mails, coverage questions, progress bar."""

from __future__ import annotations

from pathlib import Path

import pytest

from postwatch.forensics import InvestigateOptions, investigate
from postwatch.forensics.commands import _Progress

LINES = (Path(__file__).parent.parent / "fixtures" / "logs" / "rcpt_refusal.log").read_text()


def opts(path: Path, **kw: object) -> InvestigateOptions:
    base: dict[str, object] = dict(
        access_logs=[],
        mail_logs=[str(path)],
        form_paths=["/contact"],
        mailbox="info@gym.example",
        form_sender="WordPress@gym.example",
        timezone="UTC",
        year=2026,
    )
    base.update(kw)
    return InvestigateOptions(**base)  # type: ignore[arg-type]


def test_rcpt_time_refusal_of_a_form_mail_and_case_insensitive_addresses(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text(LINES)
    rep = investigate(opts(log))
    assert [(m.outcome, m.reason, m.queue_id) for m in rep.form_messages] == [
        ("bounced", "mailbox_full", None),
        ("delivered", None, "ABCDEF1234"),
    ]
    assert rep.rejected_at_rcpt == 1
    assert [(e.failures, e.recovered is not None) for e in rep.episodes] == [(1, True)]


def test_coverage_questions(tmp_path: Path) -> None:
    from datetime import date

    log = tmp_path / "mail.log"
    log.write_text(LINES)
    rep = investigate(opts(log, since=date(2026, 10, 20), until=date(2026, 11, 1)))
    text = " ".join(rep.unanswered)
    assert "the mail logs given start then" in text
    assert "the mail logs given end then" in text
    assert "no access log was given" in text


def test_empty_mail_log(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    rep = investigate(opts(log))
    assert rep.form_messages == [] and rep.inputs[0].lines == 0
    assert (
        rep.inputs[0].sha256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_progress_bar_appears_only_after_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    import postwatch.forensics.commands as commands

    clock = [100.0]
    monkeypatch.setattr(commands.time, "monotonic", lambda: clock[0])
    p = _Progress(total=100 << 20)
    p(1 << 20)
    assert p._bar is None
    clock[0] += 2.0
    p(5 << 20)
    assert p._bar is not None
    p(1 << 20)
    p.close()
