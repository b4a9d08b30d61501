"""The ``tiefvision`` commands, one module per group; :mod:`tiefvision_cli.main` lists them.

| module | commands |
|---|---|
| ``catalog`` | ``synth``, ``ingest``, ``encode`` |
| ``demo`` | ``demo`` |
| ``annotation_files`` | ``import-boxes``, ``import-triplets`` |
| ``locator`` | ``train-locator``, ``locate`` |
| ``evaluate`` | ``evaluate`` |
| ``index`` | ``rebuild-index``, ``reindex``, ``search``, ``index list``, ``index use`` |
| ``similarity`` | ``train-triplets`` |
| ``deployments`` | ``setup-prefect``, ``trigger`` |
| ``serve`` | ``serve`` |
| ``maintenance`` | ``gc`` |

A command's docstring is its ``--help``: the first paragraph is the one-line summary in the
command list, the rest the details. :func:`register` joins each paragraph's lines, so the
terminal wraps them to its width (Typer's rich help keeps a docstring's line breaks), and
the docstrings are written as plain text for the terminal (no reST markup). Flows and heavy
libraries are imported inside the commands, so ``tiefvision --help`` stays fast.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

__all__ = ["console", "err_console", "print_json", "register", "terminal_help"]

#: The command's output (stdout) and its warnings and failures (stderr).
console = Console()
err_console = Console(stderr=True)


def terminal_help(doc: str | None) -> str:
    """A docstring as help text: paragraphs kept, each paragraph's lines joined into one,
    which the terminal then wraps to its own width."""
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


def register(app: typer.Typer, command: Callable[..., Any], name: str | None = None) -> None:
    """Add ``command`` to ``app`` (named after the function, ``_`` spelled ``-``, unless
    ``name`` is given) with its docstring as its help."""
    app.command(name, help=terminal_help(command.__doc__))(command)


def print_json(document: object) -> None:
    """``--json``: the one JSON document on stdout."""
    print(json.dumps(document))
