"""Lazy re-exports for the stage packages (PEP 562): a package's public names, each
imported from its module on first use.

Why: ``from tiefvision_core.index import search_by_id`` must not import the index's other
modules (FAISS, and through search by photo, torch): a cold ``search --id`` stays a
fraction of a second. One implementation for every package, so they behave alike.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The package's ``__getattr__`` and ``__dir__``: ``exports`` maps each public name to
    the module of ``package`` that defines it; a name once loaded is kept in ``namespace``
    (the package's globals), so later lookups never come back here."""

    def attribute(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def names() -> list[str]:
        return sorted([*namespace, *exports])

    return attribute, names
