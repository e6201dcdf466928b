"""The config's lookups (form, mailbox, account) and their one ambiguity rule: a form id that
several accounts use must be written ``account/form``, and everything that takes a form id
refuses the short one (an export or a retry never picks another customer's form)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main
from typer.testing import CliRunner

from postwatch.app import create_app, serving_app
from postwatch.cli import app
from postwatch.config import (
    AmbiguousFormId,
    Config,
    ConfigError,
    FormNotFound,
    config_from_dict,
    load_config,
)
from postwatch.store import Database

TWO_ACCOUNTS = """
[database]
url = "sqlite:///{db}"
[[accounts]]
id = "gym"
[[accounts.forms]]
id = "contact"
recipients = ["info@gym.example"]
[[accounts.forms]]
id = "shared"
recipients = ["info@gym.example"]
[[accounts.mailboxes]]
address = "Info@Gym.example"
[[accounts]]
id = "bakery"
[[accounts.forms]]
id = "shared"
recipients = ["hello@bakery.example"]
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "postwatch.toml"
    path.write_text(TWO_ACCOUNTS.format(db=tmp_path / "pw.db"), encoding="utf-8")
    return path


@pytest.fixture
def cfg(config_file: Path) -> Config:
    return load_config(config_file)


def test_form_lookup_by_short_and_qualified_id(cfg: Config) -> None:
    acc, form = cfg.find_form("contact")
    assert (acc.id, form.id) == ("gym", "contact")
    assert cfg.find_form("gym/contact") == (acc, form)
    acc, form = cfg.find_form("bakery/shared")
    assert (acc.id, form.id) == ("bakery", form.id)
    assert cfg.form("nope") is None and cfg.form("bakery/contact") is None
    with pytest.raises(FormNotFound, match="no form 'nope'"):
        cfg.find_form("nope")
    assert cfg.form_refs() == ["gym/contact", "gym/shared", "bakery/shared"]


def test_ambiguous_short_form_id_is_refused_never_guessed(cfg: Config) -> None:
    with pytest.raises(AmbiguousFormId) as exc:
        cfg.find_form("shared")
    assert "several accounts" in str(exc.value) and "ACCOUNT/shared" in str(exc.value)
    assert exc.value.candidates == ["gym/shared", "bakery/shared"]
    # form() answers None only for a form that does not exist, never for an ambiguous one
    with pytest.raises(AmbiguousFormId):
        cfg.form("shared")


def test_mailbox_and_account_lookups(cfg: Config) -> None:
    assert cfg.account("bakery").id == "bakery"
    with pytest.raises(KeyError):
        cfg.account("nope")
    found = cfg.mailbox("INFO@gym.EXAMPLE")
    assert found is not None and found[0].id == "gym"
    box = cfg.mailbox_account("info@gym.example")
    assert box is not None and box.id == "gym"
    assert cfg.mailbox_account("hello@bakery.example") is None
    assert dict(cfg.watched_mailboxes()) == {"info@gym.example": "gym"}


def test_a_copy_with_other_accounts_has_its_own_index(cfg: Config) -> None:
    assert cfg.find_form("contact")[0].id == "gym"
    other = cfg.model_copy(update={"accounts": cfg.accounts[1:]})
    assert other.find_form("shared")[0].id == "bakery"  # unique there
    assert other.form("contact") is None


def test_a_mailbox_listed_by_two_accounts_is_refused(tmp_path: Path) -> None:
    box = {"address": "info@shared.example"}
    data: dict[str, Any] = {
        "accounts": [{"id": "a", "mailboxes": [box]}, {"id": "b", "mailboxes": [box]}]
    }
    with pytest.raises(ConfigError, match="listed by accounts 'a' and 'b'"):
        config_from_dict(data, tmp_path / "x.toml")


# ----------------------------------------------------------------- every command with --form


def _form_commands() -> list[str]:
    """``postwatch ...`` paths of every command that has a ``--form`` option."""
    out: list[str] = []

    def walk(cmd: Any, prefix: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*prefix, name])
            return
        if any("--form" in getattr(p, "opts", []) for p in cmd.params):
            out.append(" ".join(prefix))

    walk(typer.main.get_command(app), [])
    return sorted(out)


#: arguments each command needs besides --form and --config; a new command with a --form
#: option must be added here (test_the_table_covers_every_form_command)
FORM_COMMANDS: dict[str, list[str]] = {
    "delivery retry": [],
    "submissions export": [],
    "submissions list": [],
    "submissions release": ["--all"],
}


def test_the_table_covers_every_form_command() -> None:
    assert _form_commands() == sorted(FORM_COMMANDS)


@pytest.mark.parametrize("command", sorted(FORM_COMMANDS))
def test_every_command_refuses_an_ambiguous_form_id(command: str, config_file: Path) -> None:
    runner = CliRunner()
    base = [*command.split(), *FORM_COMMANDS[command], "--config", str(config_file)]
    r = runner.invoke(app, [*base, "--form", "shared"])
    assert r.exit_code == 2, r.output
    assert "several accounts" in r.output
    assert "gym/shared" in r.output and "bakery/shared" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    r = runner.invoke(app, [*base, "--form", "nope"])
    assert r.exit_code == 2 and "no form 'nope'" in r.output, r.output
    r = runner.invoke(app, [*base, "--form", "bakery/shared"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("serving", [False, True], ids=["routed", "fast-path"])
async def test_intake_route_refuses_an_ambiguous_form_id(
    serving: bool, cfg: Config, tmp_path: Path
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'pw.db'}")
    db.migrate()
    asgi = serving_app(cfg, db) if serving else create_app(cfg, db)
    transport = httpx.ASGITransport(app=asgi)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            json_ = {"Accept": "application/json"}
            r = await c.post("/f/shared", data={"x": "1"}, headers=json_)
            assert r.status_code == 404
            assert "several accounts" in r.json()["error"]
            assert "bakery" not in r.text  # a visitor is not told other customers' ids
            r = await c.options("/f/shared", headers={"Origin": "https://x.example"})
            assert r.status_code == 404
            r = await c.post("/f/bakery/shared", data={"x": "1"}, headers=json_)
            assert r.status_code == 201
            r = await c.post("/f/contact", data={"x": "1"}, headers=json_)
            assert r.status_code == 201
    finally:
        db.dispose()
