"""Processes as the tests see them from outside: a command's descendants read from /proc, a
command killed alone (``kill -9 PID``) checked for what it leaves, and ``tiefvision serve``
started on a free loopback port. Shared by the kill tests and the web service tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.s3_server import free_port
from tiefvision_cli.prefect_server import stop_process

ROOT = Path(__file__).resolve().parents[1]


def children() -> dict[int, list[int]]:
    """Parent pid → its children's pids, read from /proc."""
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:  # ended while we looked
            continue
        if stat:
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            found.setdefault(parent, []).append(int(entry.name))
    return found


def descendants(pid: int) -> dict[int, int]:
    """Every process below ``pid`` → its depth (1: a child of ``pid``)."""
    below, found, todo = children(), {}, [(pid, 0)]
    while todo:
        parent, depth = todo.pop()
        for child in below.get(parent, []):
            found[child] = depth + 1
            todo.append((child, depth + 1))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie holds no memory and runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def still_running(started: Mapping[int, str]) -> list[int]:
    """The processes of ``started`` (pid → command line) still running: a pid reused since,
    by another command, is not one of them."""
    return [pid for pid, line in started.items() if running(pid) and command_line(pid) == line]


@contextmanager
def killed_alone_once_its_workers_run(run: subprocess.Popen) -> Iterator[dict[int, str]]:
    """Wait until ``run`` has a worker under its fork server, SIGKILL the command alone (not
    its group, as the OOM killer or ``kill -9 PID`` do) and yield what ran below it (pid →
    command line), the fork server and multiprocessing's resource tracker among them. On
    the way out, whatever the test found still running is killed and ``run`` reaped."""
    below: dict[int, int] = {}
    started: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 300
        while not any(depth > 1 for depth in below.values()):  # a fork server's child
            assert run.poll() is None, ("the command ended before its workers", run.communicate())
            assert time.monotonic() < deadline, f"no worker process in time: {below}"
            time.sleep(0.05)
            below = descendants(run.pid)
        started = {pid: command_line(pid) for pid in below}
        kinds = " ".join(started.values())
        assert "forkserver" in kinds and "resource_tracker" in kinds, kinds
        os.kill(run.pid, signal.SIGKILL)
        yield started
    finally:
        for pid in still_running(started):
            os.kill(pid, signal.SIGKILL)
        run.kill()
        run.communicate()


def left_running(started: Mapping[int, str], within: float = 10.0) -> list[int]:
    """What of ``started`` is still running after ``within`` seconds (sooner when none is)."""
    deadline = time.monotonic() + within
    while (left := still_running(started)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@contextmanager
def serving(args: list[str], env: Mapping[str, str], log: Path) -> Iterator[tuple[str, int]]:
    """``tiefvision serve ARGS`` on a free loopback port; yields (base URL, pid) once
    ``/api/health`` answers, then stops it."""
    port = free_port()
    argv = [sys.executable, "-m", "tiefvision_cli.main", "serve", *args, "--port", str(port)]
    with log.open("wb") as output:
        process = subprocess.Popen(argv, env=dict(env), cwd=ROOT, stdout=output, stderr=output)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tiefvision serve did not start:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/health", timeout=5):
                    break
            except OSError:
                time.sleep(0.1)
        yield base, process.pid
    finally:
        stop_process(process, timeout=30)
