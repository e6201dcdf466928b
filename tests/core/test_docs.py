"""Documentation keeps up with the code: every config option and every CLI command is documented.

Like sqlite-utils: a test fails when an option or a command is added without its docs.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import typer.main
from pydantic import BaseModel

from postwatch.cli import app
from postwatch.config import Config

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                _models(t, seen)
            stack.extend(typing.get_args(t))
            if isinstance(t, types.UnionType):
                stack.extend(t.__args__)


def test_every_config_option_is_in_config_md() -> None:
    text = (DOCS / "CONFIG.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`([a-z_][a-z0-9_]*)`", text))
    # sections are documented by their TOML header: `[server]`, `[[accounts.forms]]`
    for header in re.findall(r"`\[\[?([a-z_.]+)\]\]?`", text):
        documented.add(header.rpartition(".")[2])
    models: set[type[BaseModel]] = set()
    _models(Config, models)
    missing = sorted(
        f"{m.__name__}.{name}"
        for m in models
        for name, f in m.model_fields.items()
        if not f.exclude and name not in documented
    )
    assert not missing, f"options missing from docs/CONFIG.md: {missing}"


def _commands(cmd: Any, prefix: str) -> list[str]:
    subs = getattr(cmd, "commands", None)
    if not subs:
        return [prefix]
    out = []
    for name, sub in subs.items():
        if not getattr(sub, "hidden", False):
            out.extend(_commands(sub, f"{prefix} {name}"))
    return out


def test_every_cli_command_is_in_cli_md() -> None:
    text = (DOCS / "CLI.md").read_text(encoding="utf-8")
    commands = _commands(typer.main.get_command(app), "postwatch")
    missing = [c for c in commands if f"`{c}" not in text]
    assert not missing, f"commands missing from docs/CLI.md: {missing}"


def test_events_md_and_the_event_kinds_agree() -> None:
    from postwatch.store.events import EventKind

    text = (DOCS / "EVENTS.md").read_text(encoding="utf-8")
    documented: set[str] = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            documented.update(re.findall(r"`([a-z_]+)`", first_cell))
    kinds = {k.value for k in EventKind}
    assert not kinds - documented, f"event kinds missing from docs/EVENTS.md: {kinds - documented}"
    assert not documented - kinds, f"docs/EVENTS.md lists kinds that are not EventKind: " \
        f"{documented - kinds}"
