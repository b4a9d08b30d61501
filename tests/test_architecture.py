"""Which package may import which, checked on the source text (nothing is imported).

Why: an import cycle between packages is invisible until a refactor trips over it, and a
lazy import inside a function body slips past any check that only imports modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, at any depth (function bodies too)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_web_service_never_imports_the_cli() -> None:
    """The CLI starts the web service (``tiefvision serve``), so the web service importing
    the CLI would make the two packages import each other; what both need from Prefect is
    in ``deployments.client``."""
    files = sorted((ROOT / "tiefvision_web").rglob("*.py"))
    assert files, "no tiefvision_web sources found"
    offending = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in files
        for line, module in _imported_modules(path)
        if module == "tiefvision_cli" or module.startswith("tiefvision_cli.")
    ]
    assert not offending, "\n".join(offending)
