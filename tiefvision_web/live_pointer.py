"""Objects that follow a ``CURRENT`` pointer on storage: reloaded when it moves, without a
restart and without making any request wait or fail.

Why: a nightly rebuild publishes a new index version and switches ``indexes/<space>/CURRENT``
(the same for the catalog manifest). A server that opened the old version at start would
answer from it forever; one that re-read the pointer on every request would add a storage
round trip (an S3 GET) to each search. So the pointer is read at most once per
``interval`` seconds, by one request at a time; the new version is loaded by that request
while every other request keeps using the old one, and the reference is then swapped in one
assignment (atomic in Python). A failed reload logs and keeps serving the old version.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from tiefvision_core.errors import StorageError
from tiefvision_core.storage.stores import Store

__all__ = ["LivePointer"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class LivePointer(Generic[T]):
    """The object loaded from the version a pointer names, kept current.

    ``load(version)`` builds the object; ``missing()`` builds the exception raised while the
    pointer does not exist yet (e.g. "there is no supervised index yet: build it with …").
    """

    def __init__(
        self,
        store: Store,
        pointer_key: str,
        load: Callable[[str], T],
        missing: Callable[[], Exception],
        *,
        interval: float = 1.0,
    ) -> None:
        self._store, self._key, self._load, self._missing = store, pointer_key, load, missing
        self._interval = interval
        self._lock = threading.Lock()
        self._current: tuple[str, T] | None = None
        self._checked = float("-inf")
        self.reloads = 0

    @property
    def version(self) -> str | None:
        """The version being served (None before the first successful load)."""
        current = self._current
        return current[0] if current else None

    def get(self) -> T:
        """The object for the pointer's current version (checked at most once a second)."""
        current = self._current
        due = time.monotonic() - self._checked >= self._interval
        if current is None:
            with self._lock:  # nothing to serve yet: everyone waits for the first load
                if self._current is None or time.monotonic() - self._checked >= self._interval:
                    self._refresh()
            current = self._current
            if current is None:
                raise self._missing()
            return current[1]
        if due and self._lock.acquire(blocking=False):  # one checker; the rest go on
            try:
                if time.monotonic() - self._checked >= self._interval:
                    self._refresh()
            except StorageError as error:  # an outage: one line per check, not a traceback
                log.warning(
                    "reloading %s failed (%s); still serving %s", self._key, error, current[0]
                )
            except Exception:
                log.exception("reloading %s failed; still serving %s", self._key, current[0])
            finally:
                self._lock.release()
        return self._current[1] if self._current else current[1]

    def _refresh(self) -> None:
        self._checked = time.monotonic()
        version = self._store.read_pointer(self._key)
        if version is None:
            return  # the pointer vanished (never in practice): keep what we serve
        current = self._current
        if current is not None and current[0] == version:
            return
        loaded = self._load(version)
        self._current = (version, loaded)
        if current is not None:
            self.reloads += 1
            log.info("%s moved from %s to %s: now serving it", self._key, current[0], version)
