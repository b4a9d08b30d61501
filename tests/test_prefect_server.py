"""Prefect's temporary server, started by a flow command at its first line
(``tiefvision_cli.prefect_server``): the same server and database as Prefect's own, never
for queries or ``--help``, never over a configured API, and gone with a killed command."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiefvision_cli import prefect_server

DATA = Path(__file__).parent / "data"


def _env(home: Path) -> dict[str, str]:
    """A user's shell: no Prefect API configured, Prefect's home of its own."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TIEFVISION_", "AWS_"))
    }
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )
    return env


def _servers_of(home: Path) -> list[int]:
    """PIDs of Prefect API servers whose PREFECT_HOME is ``home``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"prefect.server.api.server:create_app" in command and (
            f"PREFECT_HOME={home}".encode() in environ
        ):
            found.append(int(entry.name))
    return found


def _ingest(tmp_path: Path, *flags: str) -> list[str]:
    """The command line of an ingest of :func:`_catalog` into a new local store."""
    images, store = _catalog(tmp_path), (tmp_path / "store").as_uri()
    return [sys.executable, "-m", "tiefvision_cli.main", "ingest", *flags, "--images", str(images),
            "--store", store]  # fmt: skip


def _catalog(tmp_path: Path) -> Path:
    """Two real photos and a reject: an empty file named like a photo."""
    images = tmp_path / "images"
    images.mkdir()
    for photo in sorted((DATA / "real").rglob("*.jpg"))[:2]:
        shutil.copy(photo, images / photo.name)
    (images / "broken.jpg").write_bytes(b"")
    return images


@pytest.mark.parametrize(
    ("argv", "starts"),
    [
        (["ingest", "--images", "x"], True),
        (["--debug", "train-locator"], True),
        (["-v", "reindex", "--images", "x"], True),
        (["encode"], False),  # once its plan found work (a no-op never imports Prefect)
        (["encode", "--help"], False),
        (["search", "photo.jpg"], False),
        (["search", "--id", "abc"], False),
        (["locate", "photo.jpg"], False),  # a query; its flow form starts the server itself
        (["serve"], False),
        (["--help"], False),
        ([], False),
    ],
)
def test_only_flow_commands_start_the_server_early(
    argv: list[str], starts: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(prefect_server, "start_early", lambda: calls.append(True))
    prefect_server.start_early_for(argv)
    assert calls == ([True] if starts else [])


def test_a_flow_command_records_its_run_in_prefects_database(tmp_path: Path) -> None:
    home = tmp_path / "prefect-home"
    command = subprocess.Popen(
        _ingest(tmp_path, "--json"),
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: set[int] = set()
    deadline = time.monotonic() + 300
    while command.poll() is None and time.monotonic() < deadline:
        seen.update(_servers_of(home))
        time.sleep(0.05)
    stdout, stderr = command.communicate(timeout=30)
    assert command.returncode == 0, stderr[-2000:]
    assert '"rejected": 1' in stdout
    # One server: Prefect's own worker threads (logs, events) use it too, rather than
    # booting a second temporary server of their own.
    assert len(seen) == 1, seen
    # The database Prefect's own temporary server keeps under PREFECT_HOME: the UI of a
    # later `prefect server start` shows the run.
    with sqlite3.connect(home / "prefect.db") as db:
        runs = db.execute(
            "SELECT flow.name, flow_run.state_type FROM flow_run JOIN flow "
            "ON flow.id = flow_run.flow_id"
        ).fetchall()
    assert ("ingest", "COMPLETED") in runs
    assert _servers_of(home) == []  # stopped at exit


def test_a_killed_command_leaves_no_server_behind(tmp_path: Path) -> None:
    """Prefect's own temporary server outlives a SIGKILLed command (its stop is an atexit
    hook); this one is tied to the command's life."""
    home = tmp_path / "prefect-home"
    command = subprocess.Popen(
        _ingest(tmp_path),
        env=_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (servers := _servers_of(home)) and command.poll() is None:
            assert time.monotonic() < deadline, "no server started"
            time.sleep(0.05)
        assert servers, "the command ended before its server was seen"
        command.send_signal(signal.SIGKILL)
        command.wait()
        deadline = time.monotonic() + 20
        while _servers_of(home) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _servers_of(home) == []
    finally:
        for pid in _servers_of(home):
            os.kill(pid, signal.SIGKILL)
        if command.poll() is None:
            command.kill()


def test_an_api_url_from_a_profile_is_left_to_prefect(tmp_path: Path) -> None:
    """Only the environment is checked before the spawn; a URL in the active profile (or
    any other Prefect settings source) stops the early server and overrides nothing."""
    home = tmp_path / "prefect-home"
    home.mkdir()
    (home / "profiles.toml").write_text(
        'active = "remote"\n[profiles.remote]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n'
    )
    probe = (
        "import os; from tiefvision_cli.prefect_server import _Early, start_early\n"
        "start_early()\n"
        "from prefect.settings import PREFECT_API_URL\n"
        "print(_Early.server, os.environ.get('PREFECT_API_URL'), PREFECT_API_URL.value())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=_env(home), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["None", "None", "http://127.0.0.1:9/api"]
    time.sleep(0.5)
    assert _servers_of(home) == []
