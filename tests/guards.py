"""Guards that turn a hang into a test failure (a FIFO opened for reading blocks forever)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


def finishes_within(seconds: float, run: Callable[[], T], *, fifos: Sequence[Path] = ()) -> T:
    """``run()``'s result, or a failure after ``seconds`` instead of a test that hangs.

    A regression that opens a FIFO blocks in ``open()``; the FIFOs are then opened for
    writing, so the stuck thread can end rather than outlive the test.
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = run()
        except BaseException as error:  # re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in fifos:
            os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
        pytest.fail(f"did not finish within {seconds} s (blocked on a special file?)")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
