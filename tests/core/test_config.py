from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from postwatch.cli import app
from postwatch.config import ConfigError, load_config, parse_duration

GYM = """
[server]
listen = "127.0.0.1:8025"
[database]
url = "sqlite:///data/postwatch.db"
[smtp]
host = "127.0.0.1"
port = 2525
sender = "postwatch@hoster.example"
password_env = "PW_TEST_SMTP_SECRET"
[[accounts]]
id = "gym"
name = "Sportschool Fit"
[[accounts.forms]]
id = "contact"
recipients = ["info@gym.example"]
fallback = ["owner@private.example"]
redirect = "https://gym.example/bedankt"
"""


def test_gym_config_loads_and_resolves_secret_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PW_TEST_SMTP_SECRET", "hunter2-very-secret")
    p = tmp_path / "postwatch.toml"
    p.write_text(GYM)
    cfg = load_config(p)
    assert cfg.smtp.password is not None
    assert cfg.smtp.password.get_secret_value() == "hunter2-very-secret"
    assert "hunter2" not in repr(cfg)
    assert "hunter2" not in cfg.model_dump_json()
    found = cfg.form("contact")
    assert found is not None and found[1].fallback == ["owner@private.example"]


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "smtp.secret"
    secret.write_text("from-a-file\n")
    p = tmp_path / "postwatch.toml"
    p.write_text(GYM.replace('password_env = "PW_TEST_SMTP_SECRET"', f'password_file = "{secret}"'))
    cfg = load_config(p)
    assert cfg.smtp.password is not None
    assert cfg.smtp.password.get_secret_value() == "from-a-file"


def test_check_config_names_each_problem_with_location(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(
        '[server]\nlisten = "nowhere"\n[[accounts]]\nid = "gym"\n'
        '[[accounts.forms]]\nid = "contact"\nrecipients = ["not-an-address"]\n'
    )
    r = CliRunner().invoke(app, ["check-config", "--config", str(p)])
    assert r.exit_code == 2
    assert "server.listen" in r.output
    assert "accounts[0].forms[0].recipients[0]" in r.output
    assert "not an e-mail address" in r.output


def test_missing_env_secret_is_a_clear_problem_not_a_crash(tmp_path: Path) -> None:
    p = tmp_path / "postwatch.toml"
    p.write_text(GYM.replace("PW_TEST_SMTP_SECRET", "PW_TEST_DEFINITELY_UNSET"))
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert "PW_TEST_DEFINITELY_UNSET is not set" in str(ei.value)


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "broken.toml"
    p.write_text('[server]\nlisten = "127.0.0.1:8025\n')
    r = CliRunner().invoke(app, ["check-config", "--config", str(p)])
    assert r.exit_code == 2
    assert "line 2" in r.output


def test_missing_config_file_is_a_message(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["check-config", "--config", str(tmp_path / "nope.toml")])
    assert r.exit_code == 2 and "file not found" in r.output


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("72h", 259200), ("7d", 604800), (90, 90)]
)
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_init_writes_a_config_that_checks(tmp_path: Path) -> None:
    p = tmp_path / "postwatch.toml"
    r = CliRunner().invoke(app, ["init", "--config", str(p)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["check-config", "--config", str(p)])
    assert r.exit_code == 0, r.output


def test_version_option() -> None:
    from postwatch import __version__

    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"postwatch {__version__}"
