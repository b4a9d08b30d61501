"""The installed ``tiefvision`` command as the CLI tests run it: a clean environment (none of
the caller's ``TIEFVISION_*`` or ``AWS_*`` settings) and the one-line error contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLI = str(Path(sys.executable).parent / "tiefvision")


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """``tiefvision *args``, its output captured; ``env`` is added to a copy of this
    process's environment without our own settings and AWS credentials."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TIEFVISION_", "AWS_"))}
    full_env.update(env or {})
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, env=full_env, timeout=timeout, check=False
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The one line a refused command prints (exit status 2, no traceback)."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
