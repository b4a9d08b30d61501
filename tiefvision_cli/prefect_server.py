"""Prefect's temporary server for a command that runs a flow, started at the command's first
line instead of at its first API call.

Why: without ``PREFECT_API_URL`` Prefect starts a temporary server (a uvicorn subprocess) the
first time a flow talks to the API — after the command has imported torch, built the encoder
and checked the store, and after importing the whole server package in the command's own
process only to spawn it (3 s). That start (6–12 s on this 2-core machine) then runs while
the command waits. Started here, as the first thing a flow command does, the server boots
on the other core while the command imports and checks; the command waits only for what
is left at the moment it hands over to the flow (:func:`flow_run`).

It is the same server Prefect would start (same command, same environment, same database
under ``PREFECT_HOME``), so runs are recorded exactly as before. Where a Prefect API is
configured in any of Prefect's settings sources (environment, profile, ``.env``,
``prefect.toml``), or the temporary server is disallowed, nothing is started and Prefect
decides as it always did. Unlike Prefect's own, this server also dies with the command when
the command is killed (``PR_SET_PDEATHSIG``): a SIGKILLed run leaves no orphan behind.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tiefvision_core.errors import TiefVisionError
from tiefvision_core.processes import die_with_parent

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "FLOW_COMMANDS",
    "TemporaryServer",
    "first_word",
    "flow_run",
    "start_early",
    "start_early_for",
    "stop_process",
]

#: What Prefect's ``SubprocessASGIServer`` sets for its server (no UI, ephemeral mode).
_SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}
#: uvicorn's exit code when the port was taken between choosing and binding it.
_PORT_TAKEN = 3


class ServerStartError(TiefVisionError):
    """The temporary Prefect server did not answer in time."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """SIGTERM (uvicorn shuts down cleanly) when the command's thread that started it ends:
    the command starts it from its main thread, so that is when the command ends."""
    die_with_parent(signal.SIGTERM)


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM (a server shuts down cleanly), then SIGKILL after ``timeout`` seconds: how
    the temporary server stops, and how the tests stop the ``serve`` they start."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class TemporaryServer:
    """One uvicorn process serving Prefect's API on a free local port."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._ready = False

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent  # type: ignore[arg-type, union-attr]
        self.port = _free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir.parent), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
            env={**os.environ, **_SERVER_ENV},
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )  # fmt: skip
        atexit.register(self.stop)

    def wait(self, timeout: float) -> None:
        """Block until ``/health`` answers 200; restart on another port if this one was taken."""
        if self._ready:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            code = self.process.poll()
            if code == _PORT_TAKEN:
                self.start()
                continue
            if code is not None:
                raise ServerStartError(
                    f"Prefect's temporary server exited with code {code} before answering; "
                    "rerun with --verbose, or set PREFECT_API_URL to a running Prefect server"
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        self._ready = True
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise ServerStartError(
            f"Prefect's temporary server did not answer within {timeout:.0f} s (a busy machine?): "
            "raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or set PREFECT_API_URL "
            "to a running Prefect server"
        )

    def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        stop_process(process, timeout=5)


class _Early:
    """This process's early start: tried at most once, and the server if one was started."""

    tried = False
    server: TemporaryServer | None = None


def start_early() -> None:
    """Start the temporary server now if Prefect would start one later; idempotent.

    The spawn comes first and the check second on purpose: importing Prefect to read its
    settings takes a second, which the server's own start then overlaps.
    """
    if _Early.tried or os.environ.get("PREFECT_API_URL"):
        return
    _Early.tried = True
    server = TemporaryServer()
    server.start()
    from prefect.context import refresh_global_settings_context
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        server.stop()  # configured elsewhere (a profile, prefect.toml …): Prefect decides
        return
    # Why the environment, when our own values go to flows as arguments: this is Prefect's
    # setting, read by processes and threads this command never passes arguments to.
    # Child processes (Dask workers, subprocess flows) get it only through the environment,
    # and this process's Prefect reads its root settings from the environment (refreshed
    # below); every thread falls back on them. ``prefect.settings.temporary_settings`` would
    # not do: it sets a context variable, which Prefect's own worker threads (its log and
    # event services) start without, so they would boot a second temporary server.
    os.environ["PREFECT_API_URL"] = server.api_url
    refresh_global_settings_context()
    _Early.server = server


#: Commands that always run a flow. ``locate`` runs one only without a photo (a photo is a
#: query, which never starts Prefect): it calls :func:`start_early` itself when it does.
#: ``encode`` too, once its plan found work: a nightly ``encode`` usually finds none, and
#: reading Prefect's settings to start a server (importing Prefect: about 3 s here) would
#: be most of a no-op's time.
FLOW_COMMANDS = frozenset(
    {
        "ingest",
        "demo",
        "train-locator",
        "rebuild-index",
        "reindex",
        "train-triplets",
        "gc",
        "evaluate",
    }
)


def first_word(argv: list[str]) -> int:
    """Index of the subcommand in ``argv`` (the first word that is not an option; the global
    options take no value), or ``len(argv)``."""
    return next((i for i, word in enumerate(argv) if not word.startswith("-")), len(argv))


#: Flags that make a flow command read storage only, with no flow run (no server needed).
_NO_FLOW_FLAGS = {"--help", "-h", "--history"}


def start_early_for(argv: list[str]) -> None:
    """:func:`start_early` when the command line names a flow command — before the command's
    own imports, so the server's boot overlaps them too. ``--help`` (and ``evaluate
    --history``, which reads stored scores) starts nothing."""
    at = first_word(argv)
    if at < len(argv) and argv[at] in FLOW_COMMANDS and not _NO_FLOW_FLAGS & set(argv):
        start_early()


def _startup_timeout() -> float:
    try:
        return float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90"))
    except ValueError:
        return 90.0


@contextmanager
def flow_run(console: Console | None = None, *, progress: bool = True) -> Iterator[None]:
    """Where a command hands over to its flow: the early server must answer first; then the
    progress bar (when a console is given and ``progress``)."""
    if _Early.server is not None:
        _Early.server.wait(_startup_timeout())
    if console is None:
        yield
        return
    from tiefvision_cli.report import progress_bar

    with progress_bar(console, enabled=progress):
        yield
