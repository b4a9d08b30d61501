"""Progress of long stages: a Prefect progress artifact for the UI, listeners for the CLI.

Why process-local listeners: the CLI runs the flow in its own process (tasks in threads), so
a callback is the cheapest way to drive a terminal progress bar without polling the API.
Artifact updates are throttled: one API call per batch would slow a fast GPU run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

__all__ = ["ProgressListener", "advance", "listen", "start_progress"]

ProgressListener = Callable[[str, int, int], None]  # (stage, done, total)
_LISTENERS: list[ProgressListener] = []
_STATE: dict[str, list[float]] = {}  # progress id -> [done, total, last artifact update]
_LOCK = threading.Lock()
_ARTIFACT_EVERY_S = 10.0  # each update is a synchronous API round trip (~0.3 s of CPU)


def listen(listener: ProgressListener) -> Callable[[], None]:
    """Register a listener; returns the function that unregisters it."""
    _LISTENERS.append(listener)
    return lambda: _LISTENERS.remove(listener)


def start_progress(stage: str, total: int, description: str) -> str:
    """Create the UI artifact (from inside a flow run) and return the progress id."""
    artifact_id = create_progress_artifact(
        progress=0.0, key=f"{stage}-progress", description=description
    )
    key = str(artifact_id)
    with _LOCK:
        _STATE[key] = [0, total, time.monotonic()]
    for listener in list(_LISTENERS):
        listener(stage, 0, total)
    return key


def advance(progress_id: str | None, stage: str, count: int) -> None:
    """``count`` more items done (called from tasks, any thread)."""
    if progress_id is None or progress_id not in _STATE:
        return
    with _LOCK:
        state = _STATE[progress_id]
        state[0] += count
        done, total = int(state[0]), int(state[1])
        due = time.monotonic() - state[2] >= _ARTIFACT_EVERY_S or done >= total
        if due:
            state[2] = time.monotonic()
    if due:
        update_progress_artifact(UUID(progress_id), progress=100.0 * done / max(1, total))
    for listener in list(_LISTENERS):
        listener(stage, done, total)
