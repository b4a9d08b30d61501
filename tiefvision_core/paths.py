"""Where TiefVision keeps per-user files that can always be rebuilt."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["user_cache_dir"]


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/tiefvision`` (``~/.cache/tiefvision`` by default).

    One place, so every cache (layout choices, index copies, encoder geometry) honours
    ``XDG_CACHE_HOME`` the same way and a test can redirect all of them with one variable.
    """
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tiefvision"
