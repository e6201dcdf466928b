"""check-config warnings about set-ups that lose news (issue 10, item 12), and the sample
config ``init`` / ``serve --init`` writes."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from postwatch.cli import app

runner = CliRunner()

BASE = """
[database]
url = "sqlite:///{tmp}/pw.db"
[smtp]
host = "127.0.0.1"
sender = "pw@hoster.example"
final = {final}
{extra}
[[accounts]]
id = "gym"
[[accounts.forms]]
id = "contact"
recipients = ["info@gym.example"]
{contacts}
"""
CONTACT = """
[[accounts.contacts]]
name = "Ellen"
role = "owner"
channels = ["ntfy://ntfy.sh/gym-ellen"]
"""


def check(tmp_path: Path, *, final: str = "false", extra: str = "", contacts: str = "") -> str:
    p = tmp_path / "pw.toml"
    p.write_text(BASE.format(tmp=tmp_path, final=final, extra=extra, contacts=contacts))
    r = runner.invoke(app, ["check-config", "--config", str(p)])
    assert r.exit_code == 0, r.output  # warnings do not fail the check
    return r.output


def test_the_sample_shows_what_to_fill_in_and_warns(tmp_path: Path) -> None:
    p = tmp_path / "postwatch.toml"
    r = runner.invoke(app, ["init", "--config", str(p)])
    assert r.exit_code == 0, r.output
    text = p.read_text()
    for part in ("[[accounts.mailboxes]]", "quota", "[[maillogs]]", "[[accounts.contacts]]",
                 "final = "):
        assert part in text, part
    r = runner.invoke(app, ["check-config", "--config", str(p)])
    assert r.exit_code == 0, r.output
    assert "nobody will be told" in r.output
    assert "go unseen" not in r.output  # the sample follows the mail log


def test_nobody_to_tell(tmp_path: Path) -> None:
    out = check(tmp_path, final="true")
    assert "warning: accounts[gym]: nobody will be told" in out
    assert "nobody will be told" not in check(tmp_path, final="true", contacts=CONTACT)


def test_relay_without_log_or_bounce_mailbox(tmp_path: Path) -> None:
    out = check(tmp_path, contacts=CONTACT)
    assert "warning: smtp.final = false" in out and "go unseen" in out
    log = '[[maillogs]]\npath = "/var/log/mail.log"\n'
    assert "go unseen" not in check(tmp_path, extra=log, contacts=CONTACT)
    box = '[[bounce_mailboxes]]\nhost = "127.0.0.1"\nuser = "b@hoster.example"\npassword = "x"\n'
    assert "go unseen" not in check(tmp_path, extra=box, contacts=CONTACT)
    assert "go unseen" not in check(tmp_path, final="true", contacts=CONTACT)
