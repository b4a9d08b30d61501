"""A child started with :func:`exit_with` ends with its owner, reaped or not."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tiefvision_core import processes
from tiefvision_core.processes import wait_for_exit


@pytest.fixture
def owner() -> Iterator[subprocess.Popen[bytes]]:
    """A process to outlive: killed by the test and, on purpose, not reaped (a zombie)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def _without_pidfds(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on macOS, an old kernel or a sandbox that forbids pidfd_open: polling."""

    def refuse(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(processes.os, "pidfd_open", refuse)


@pytest.mark.parametrize("pidfds", [True, False], ids=["pidfd", "polling"])
def test_wait_for_exit_returns_when_the_process_ends_even_unreaped(
    owner: subprocess.Popen[bytes], pidfds: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pidfds:
        _without_pidfds(monkeypatch)
    waiter = threading.Thread(target=wait_for_exit, args=(owner.pid,), kwargs={"poll_s": 0.05})
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive(), "returned while the process was still running"
    owner.kill()  # not waited for: a zombie, which kill(pid, 0) still finds
    waiter.join(5)
    assert not waiter.is_alive(), "still waiting 5 s after the process ended"


def test_wait_for_exit_returns_at_once_for_a_process_already_gone() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    started = time.monotonic()
    wait_for_exit(gone.pid)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("pidfds", [True, False], ids=["pidfd", "polling"])
def test_exit_with_ends_the_child_when_its_owner_is_killed(
    owner: subprocess.Popen[bytes], pidfds: bool
) -> None:
    """The child is not the owner's child (as a fork server's worker is not): only the
    watch can end it."""
    setup = "" if pidfds else "del os.pidfd_open\n"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import os, time\n{setup}from tiefvision_core.processes import exit_with\n"
            f"exit_with({owner.pid}); print('watching', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"watching\n"
        time.sleep(0.3)
        assert child.poll() is None, "exited while its owner was alive"
        owner.kill()
        assert child.wait(timeout=5) == 1
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_the_fallback_sees_a_zombie_as_ended(owner: subprocess.Popen[bytes]) -> None:
    assert processes._running(owner.pid)
    owner.kill()
    deadline = time.monotonic() + 5
    while processes._running(owner.pid):
        assert time.monotonic() < deadline, "a killed, unreaped process still counts as running"
        time.sleep(0.05)
    assert owner.returncode is None  # nobody reaped it: _running saw a zombie
