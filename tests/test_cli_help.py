"""``--help`` is read in a terminal: plain text (no reST markup from the docstrings) in
paragraphs the terminal wraps, with a one-line summary in the command list."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from tiefvision_cli.main import app

CLI = str(Path(sys.executable).parent / "tiefvision")


def _commands(group: Any, prefix: str = "") -> dict[str, Any]:
    """Every command by its full name (``index use``), groups included. (Typer builds
    them with its own copy of click: a group is what has subcommands.)"""
    found: dict[str, Any] = {}
    for name, command in group.commands.items():
        found[f"{prefix}{name}"] = command
        if hasattr(command, "commands"):
            found.update(_commands(command, f"{prefix}{name} "))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def _help(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "100"}
    done = subprocess.run(
        [CLI, *args, "--help"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("args", [(), ("evaluate",), ("index", "use")])
def test_help_shows_no_docstring_markup(args: tuple[str, ...]) -> None:
    shown = _help(*args)
    assert "Usage: tiefvision" in shown
    assert "``" not in shown, shown


def test_evaluate_help_names_history_as_typed() -> None:
    """The option as a user types it, where the docstring once said ``--history``."""
    assert "With --history" in _help("evaluate")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_help_text_is_paragraphs_for_the_terminal(name: str) -> None:
    """No reST markup, and no line break inside a paragraph: Typer's rich help prints a
    docstring's line breaks as they are, so a paragraph broke mid-sentence wherever the
    source wrapped it. The first paragraph is the summary the command list shows."""
    text = COMMANDS[name].help or ""
    assert text, f"{name} has no help"
    assert "``" not in text, text
    paragraphs = text.split("\n\n")
    assert all(p and "\n" not in p for p in paragraphs), paragraphs
    assert len(paragraphs[0]) <= 90, paragraphs[0]


def test_the_command_list_keeps_its_names_and_order() -> None:
    """The command list is the CLI's contract (docs/cli.md): names and order kept."""
    assert list(_commands(typer.main.get_command(app))) == [
        "synth",
        "ingest",
        "encode",
        "demo",
        "import-boxes",
        "import-triplets",
        "train-locator",
        "locate",
        "evaluate",
        "rebuild-index",
        "reindex",
        "search",
        "train-triplets",
        "setup-prefect",
        "trigger",
        "serve",
        "gc",
        "index",
        "index list",
        "index use",
    ]
