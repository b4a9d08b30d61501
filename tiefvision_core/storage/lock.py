"""A lock object on storage: one run of a job at a time per store, whoever starts it.

Why on storage rather than a Prefect global concurrency limit: what two reindex runs fight
over is the store (encodings, index versions, ``CURRENT`` pointers), and every writer of the
store sees this object — runs of any Prefect server or worker, and CLI runs in Prefect's
ephemeral mode, which have no shared server at all. And a killed holder must not block the
next night: a Prefect lease outlives a killed run by at least its minimum duration (60 s),
and in ephemeral mode it lives in the memory of a server that dies with the run, so the
slot would never come back. Here:

* the holder rewrites the lock's heartbeat every ``ttl_s / 4``; a lock whose heartbeat is
  older than ``ttl_s`` is stale and is broken by the next run;
* a lock whose holder process ran in this machine's process space (same host, boot and PID
  namespace) and is gone is stale at once — a SIGKILLed run is recovered immediately;
* creation is atomic (:meth:`Store.put_if_absent`), and the holder checks it still owns the
  lock before publishing (:meth:`StoreLock.check`), so a holder whose lock was broken while
  it was frozen never switches a pointer;
* every later write is a compare-and-swap on the bytes last read (:meth:`Store.replace_if`,
  :meth:`Store.delete_if`): a takeover replaces exactly the stale record it judged, and a
  holder that was judged stale and wakes up finds its heartbeat refused (it learns
  :class:`LockLost`) instead of overwriting the new holder's lock, and its release deletes
  nothing. On local disk the swap is atomic (an ``flock`` around compare and rename); on S3
  it is an ``If-Match`` request plus a read-back, so on servers that ignore ``If-Match``
  (rclone) two swaps of the same record within the read-back's settle time still leave one
  winner, and a release can delete a takeover that lands within its one round trip — a
  takeover only happens to a holder already silent for a whole TTL, so that is a holder
  releasing at the very moment it is judged dead.

The holder records its Prefect flow run id (``flow_run_id``): whoever breaks a stale lock
is told whose it was (``on_break``), so the task layer can mark that run Crashed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from tiefvision_core.errors import StorageNotFound, TiefVisionError
from tiefvision_core.storage.layout import LOCK_PREFIX
from tiefvision_core.storage.stores import Store

__all__ = ["LockBusy", "LockHolder", "LockLost", "StoreLock", "lock_key", "process_gone"]

_log = logging.getLogger(__name__)


class LockBusy(TiefVisionError):
    """Another run holds the lock and did not finish within the wait."""


class LockLost(TiefVisionError):
    """The lock was broken while held (heartbeats stopped for longer than its TTL)."""


def lock_key(name: str) -> str:
    return f"{LOCK_PREFIX}{name}.json"


def _process_space() -> str:
    """Where a PID names the same process as here: host, boot and PID namespace. Empty when
    unknown (no /proc): then only the heartbeat decides."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{socket.gethostname()}|{boot}|{namespace}"


def process_gone(pid: int) -> bool:
    """True when ``pid`` (in this PID namespace) is no longer running (or is a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class LockHolder:
    """What the lock object says about the run holding it."""

    owner: str  # a random token per acquisition
    label: str  # what holds it, for people: the flow run's name and id
    host: str
    pid: int
    process_space: str
    started_at: float  # epoch seconds
    heartbeat_at: float
    ttl_s: float
    flow_run_id: str = ""  # the Prefect flow run holding it, when there is one

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LockHolder:
        return cls(**json.loads(data))

    def stale_reason(self, now: float, here: str) -> str | None:
        """Why the lock may be broken, or None while its holder may still be running."""
        age = now - self.heartbeat_at
        if age > self.ttl_s:
            return f"no heartbeat for {age:.0f} s (TTL {self.ttl_s:.0f} s)"
        if here and self.process_space == here and process_gone(self.pid):
            return f"its process {self.pid} on {self.host} is gone"
        return None

    def describe(self, now: float) -> str:
        return (
            f"{self.label} on {self.host} (pid {self.pid}), started {_stamp(self.started_at)}, "
            f"last heartbeat {now - self.heartbeat_at:.0f} s ago"
        )


class StoreLock:
    """A named lock on a store, held by this process while :meth:`hold` is open."""

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        label: str,
        ttl_s: float = 120.0,
        poll_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        flow_run_id: str = "",
    ) -> None:
        if ttl_s <= 0 or poll_s <= 0:
            raise ValueError("ttl_s and poll_s must be positive")
        self.store, self.name, self.key, self.label = store, name, lock_key(name), label
        self.flow_run_id = flow_run_id
        self.ttl_s, self.poll_s, self._clock = ttl_s, poll_s, clock
        self._holder: LockHolder | None = None
        self._lost: str | None = None
        self.waited_s = 0.0  # how long the last acquire waited
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- reading ---------------------------------------------------------------------------
    def _read(self) -> tuple[bytes, LockHolder] | None:
        try:
            data = self.store.get_bytes(self.key)
        except StorageNotFound:
            return None
        try:
            return data, LockHolder.from_bytes(data)
        except (ValueError, TypeError):  # not ours or damaged: treat as long dead
            return data, LockHolder("?", "an unreadable lock", "?", 0, "", 0.0, 0.0, 0.0)

    def holder(self) -> LockHolder | None:
        found = self._read()
        return None if found is None else found[1]

    def _read_mine(self) -> bytes | None:
        """The lock's bytes while this run's token is in them, else None."""
        found = self._read()
        holder = self._holder
        if found is None or holder is None or found[1].owner != holder.owner:
            return None
        return found[0]

    # -- acquiring -------------------------------------------------------------------------
    def acquire(
        self,
        timeout_s: float,
        on_wait: Callable[[LockHolder], None] | None = None,
        on_break: Callable[[LockHolder, str], None] | None = None,
    ) -> float:
        """Take the lock, waiting up to ``timeout_s`` for a live holder; returns the seconds
        waited. Stale locks are taken over on the way, and ``on_break(holder, reason)`` is
        told whose (only by the run whose takeover won). Raises :class:`LockBusy` naming
        the holder when the wait runs out."""
        started = time.monotonic()
        here = _process_space()
        told = False
        while True:
            now = self._clock()
            mine = LockHolder(
                uuid.uuid4().hex,
                self.label,
                socket.gethostname(),
                os.getpid(),
                here,
                now,
                now,
                self.ttl_s,
                self.flow_run_id,
            )
            if self.store.put_if_absent(self.key, mine.to_bytes()):
                return self._took(mine, started)
            found = self._read()
            if found is None:  # released between our look and our read: try again now
                continue
            data, other = found
            reason = other.stale_reason(self._clock(), here)
            if reason is not None:
                _log.warning("breaking stale lock %s held by %s: %s", self.key, other.label, reason)
                # Replace exactly the record judged stale: if another run took it over in
                # between, the swap fails and the loop looks again.
                if self.store.replace_if(self.key, data, mine.to_bytes()):
                    waited = self._took(mine, started)
                    if on_break is not None:
                        try:
                            on_break(other, reason)
                        except Exception as error:  # telling is best effort, the lock is ours
                            _log.warning("after breaking %s: %s", self.key, error)
                    return waited
                continue
            waited = time.monotonic() - started
            if waited >= timeout_s:
                raise LockBusy(
                    f"another run holds this store's {self.name} lock: "
                    f"{other.describe(self._clock())} (lock "
                    f"{self.store.uri(self.key)}); gave up after waiting {waited:.0f} s. Try "
                    "again when it has finished, or wait longer (--lock-timeout)"
                )
            if on_wait is not None and not told:
                on_wait(other)
                told = True
            time.sleep(min(self.poll_s, max(0.0, timeout_s - waited)))

    def _took(self, mine: LockHolder, started: float) -> float:
        self._holder = mine
        self._lost = None
        self._start_heartbeat()
        self.waited_s = time.monotonic() - started
        return self.waited_s

    # -- holding ---------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="store-lock", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                if not self.beat():
                    return
            except Exception as error:  # storage hiccup: try again at the next beat
                _log.warning("lock heartbeat for %s failed: %s", self.key, error)

    def beat(self) -> bool:
        """One heartbeat: a swap of the record just read, judged ours, for a fresh stamp.
        False (and :meth:`check` raises :class:`LockLost` from then on) when the lock is
        no longer ours — read so, or taken over between the read and the swap."""
        holder = self._holder
        if holder is None:
            return False
        seen = self._read_mine()
        if seen is not None:
            beat = LockHolder(**{**asdict(holder), "heartbeat_at": self._clock()})
            if self.store.replace_if(self.key, seen, beat.to_bytes()):
                return True
        found = self._read()
        who = "nobody" if found is None else found[1].label
        self._lost = f"the lock was broken while this run held it (now: {who})"
        return False

    def check(self) -> None:
        """Raise :class:`LockLost` when the lock is no longer this run's: call it before
        anything that must not happen twice at once (switching a pointer)."""
        if self._holder is None:
            raise LockLost(f"{self.key} is not held by this run")
        if self._lost is None:
            found = self._read()
            if found is None or found[1].owner != self._holder.owner:
                self._lost = "the lock was broken while this run held it"
        if self._lost is not None:
            raise LockLost(
                f"{self._lost}; this run stops before publishing. Start it again: finished "
                "work is reused"
            )

    def release(self) -> None:
        """Stop the heartbeat and delete the lock if it is still ours (a conditional delete
        of the record read: a successor's lock is never deleted)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=10)
        try:
            seen = self._read_mine()
            if seen is not None:
                self.store.delete_if(self.key, seen)
        finally:
            self._holder = None

    @contextmanager
    def hold(
        self,
        timeout_s: float,
        on_wait: Callable[[LockHolder], None] | None = None,
        on_break: Callable[[LockHolder, str], None] | None = None,
    ) -> Iterator[float]:
        """``with lock.hold(600) as waited:`` — acquire, yield the seconds waited, release."""
        waited = self.acquire(timeout_s, on_wait, on_break)
        try:
            yield waited
        finally:
            self.release()
