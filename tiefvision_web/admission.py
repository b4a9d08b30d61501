"""Admission of the heavy requests (search by uploaded photo): a few at work, a few waiting,
503 with ``Retry-After`` beyond — at once, before their bodies are read.

Why: each upload is decoded, located and encoded, seconds of CPU and (for a large photo) a
few hundred MB at its peak. Run by FastAPI's thread pool, 50 concurrent 25 MP uploads took
40 threads at once: peak RSS 1.1 → 8.5 GB, still 7.8 GB 20 s later, and ``/api/health``
(waiting for a thread of the same pool) unanswered for 16 s (``bench/serve_flood.py``).
Now at most ``slots`` of them work (in worker threads of their own, so the pool and the
event loop stay free for everything else) and ``queue`` more wait; a request beyond that
is refused before its body is read, which costs nothing. ``slots`` is
``TIEFVISION_WORKERS`` (default: the machine's cores), since more would only share them.

Why :func:`trim_memory` after each: glibc keeps the memory a freed image occupied in its
arenas (reused later, but counted in RSS, seen as a leak by an orchestrator);
``malloc_trim(0)`` hands the free pages back to the kernel. ``gc.collect()`` cannot: the
objects are freed already, it is the allocator that holds on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import logging
import sys
from collections.abc import Callable, Collection
from typing import TypeVar

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["RETRY_AFTER_S", "Admission", "AdmissionLimit", "trim_memory"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What a refused client is told to wait: about one upload's time on a busy slot.
RETRY_AFTER_S = 2


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or ``None`` where there is none (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def trim_memory() -> bool:
    """Return the allocator's free pages to the kernel; whether that was possible here."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class Admission:
    """How many heavy requests may work (``slots``) and wait (``queue``) at once."""

    def __init__(self, slots: int, queue: int) -> None:
        if slots < 1 or queue < 0:
            raise ValueError(f"slots {slots} (≥ 1), queue {queue} (≥ 0)")
        self.slots, self.queue = slots, queue
        self.limiter = anyio.CapacityLimiter(slots)
        self.admitted = 0  # changed on the event loop only: no lock needed

    def try_enter(self) -> bool:
        """Take a place (working or waiting) when one is free."""
        if self.admitted >= self.slots + self.queue:
            return False
        self.admitted += 1
        return True

    def leave(self) -> None:
        self.admitted -= 1

    async def run(self, work: Callable[[], T]) -> T:
        """``work`` in a worker thread once a slot is free; the memory it freed is handed
        back to the kernel in that thread afterwards."""

        def work_then_trim() -> T:
            try:
                return work()
            finally:
                trim_memory()

        return await anyio.to_thread.run_sync(work_then_trim, limiter=self.limiter)


class AdmissionLimit:
    """ASGI middleware: requests to ``routes`` (method, path) beyond the admission's places
    get 503 with ``Retry-After`` before their body is read; the others hold a place until
    their answer is sent."""

    def __init__(
        self, app: ASGIApp, admission: Admission, routes: Collection[tuple[str, str]]
    ) -> None:
        self.app, self.admission, self.routes = app, admission, frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) not in self.routes:
            await self.app(scope, receive, send)
            return
        if not self.admission.try_enter():
            await _busy(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.leave()


async def _busy(scope: Scope, receive: Receive, send: Send) -> None:
    """503 with ``Retry-After``, sent at once; the connection stays open until the client
    has sent its body (read and dropped, a chunk at a time), because a client that is
    still sending when the server closes gets a broken pipe instead of this answer. A
    client that asked ``Expect: 100-continue`` never sends the body at all."""
    body = json.dumps(
        {
            "detail": "the server is busy with other photo searches: try again in "
            f"{RETRY_AFTER_S} s (search by id is not limited)"
        }
    ).encode()
    log.info("search by upload refused: every place is taken")
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(RETRY_AFTER_S).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": True})
    if (b"expect", b"100-continue") not in scope["headers"]:
        while (await receive()).get("more_body", False):
            pass
    await send({"type": "http.response.body", "body": b""})
