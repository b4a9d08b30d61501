"""The one line a user sees when a command fails in a way nobody planned for (a bug, a
corrupt file, an environment we did not foresee).

Why not the exception's message: it is a library's words about its own internals — the
last line of pyarrow's "Schema at index 27 was different" is ``target:
fixed_size_list<item: double>[4]``, which says nothing to a user and may echo data. What
helps is which command, which stage of ours it was in, what kind of failure, and how to see
the rest: ``--debug`` prints the traceback.
"""

from __future__ import annotations

import traceback
from pathlib import Path

__all__ = ["failing_stage", "unexpected_error_line"]

_ROOT = Path(__file__).resolve().parents[1]
#: Our packages, innermost first in preference: where the failure is said to be.
_STAGES = ("tiefvision_core", "tasks", "flows", "deployments", "tiefvision_web")


def failing_stage(error: BaseException) -> str | None:
    """``module.function`` of the innermost frame in one of our stage packages, if any."""
    stage = None
    for frame in traceback.extract_tb(error.__traceback__):
        try:
            relative = Path(frame.filename).resolve().relative_to(_ROOT)
        except ValueError:
            continue  # a library's frame (or our venv's)
        if relative.parts[0] in _STAGES and relative.suffix == ".py":
            module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
            stage = f"{module}.{frame.name}"
    return stage


def unexpected_error_line(command: str | None, error: BaseException) -> str:
    """``tiefvision encode failed: unexpected ArrowInvalid in tiefvision_core…; rerun …``."""
    where = failing_stage(error)
    kind = type(error).__name__
    what = f"tiefvision {command}" if command else "tiefvision"
    inside = f" in {where}" if where else ""
    return (
        f"{what} failed: unexpected {kind}{inside} (not an input we check for: "
        "rerun with --debug for the traceback, and report it if the input looks right)"
    )
