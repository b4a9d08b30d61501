"""Child processes that end with the process that owns them, even when it is SIGKILLed.

Why: a command killed by SIGKILL (the OOM killer, ``kill -9``, a CI timeout) runs no
cleanup, and whatever it started is re-parented to PID 1 and lives on: the encoding
processes wait forever on a queue nobody writes, holding their models (hundreds of MB) and,
through the pipes they inherited, multiprocessing's fork server and resource tracker too.

Two ways, for two kinds of child:

* :func:`die_with_parent` — the kernel signals the child when its parent *thread* ends
  (``PR_SET_PDEATHSIG``). Only for a child started directly by a thread that lives as long
  as the process (the Prefect server, started from the command's main thread): a child
  started from a worker thread would be killed when that thread ends.
* :func:`exit_with` — a thread in the child waits for the owner's process (any thread,
  any distance: a fork server's child is not the owner's child) and exits the child when
  it ends. The fork server and the resource tracker then end by themselves: each stops
  when the last process holding its pipe, the owner or a child, is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path

__all__ = ["die_with_parent", "exit_with", "wait_for_exit"]

_PR_SET_PDEATHSIG = 1
#: /proc/PID/stat states of a process that has ended but was not reaped yet.
_ENDED_STATES = frozenset({"Z", "X"})


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent thread ends.

    Linux only (elsewhere nothing happens); safe between fork and exec (``preexec_fn``).
    """
    if sys.platform != "linux":
        return
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)


def exit_with(owner_pid: int) -> threading.Thread:
    """Exit this process (code 1, no cleanup: its owner is gone, nobody waits for it) as
    soon as process ``owner_pid`` ends; the watching runs in a daemon thread."""

    def watch() -> None:
        wait_for_exit(owner_pid)
        os._exit(1)

    watcher = threading.Thread(target=watch, name=f"exit-with-{owner_pid}", daemon=True)
    watcher.start()
    return watcher


def wait_for_exit(pid: int, *, poll_s: float = 1.0) -> None:
    """Block until process ``pid`` has ended — reaped or not: a SIGKILLed command stays a
    zombie until its parent waits for it, and that may be never.

    Linux ≥ 5.3 is told at once through a pidfd (and cannot mistake a later process that
    reuses the number for the owner); elsewhere, or where a sandbox forbids pidfds, this
    polls every ``poll_s`` seconds.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):
        while _running(pid):
            time.sleep(poll_s)
        return
    try:
        select.select([pidfd], [], [])  # a pidfd turns readable when its process ends
    finally:
        os.close(pidfd)


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and has not ended (a zombie counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process by that number: still there
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS), or reaped just now: the next poll tells
    return stat.rsplit(")", 1)[1].split()[0] not in _ENDED_STATES
