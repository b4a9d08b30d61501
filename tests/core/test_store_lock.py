"""The store lock on local disk and on the real S3 server: one holder at a time, the second
waits then takes it after release or gives up with a message naming the holder, dead
holders (stale heartbeat or a vanished process) are taken over, and a holder whose lock was
broken learns it before publishing."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tiefvision_core.storage import Store
from tiefvision_core.store_lock import LockBusy, LockHolder, LockLost, StoreLock, _process_space

KEY = "locks/reindex.json"


def lock(store: Store, label: str, **kwargs) -> StoreLock:
    kwargs.setdefault("ttl_s", 30.0)
    kwargs.setdefault("poll_s", 0.1)
    return StoreLock(store, "reindex", label=label, **kwargs)


def test_second_holder_waits_and_gets_the_lock_after_release(store: Store) -> None:
    first, second = lock(store, "run A"), lock(store, "run B")
    assert first.acquire(timeout_s=5) < 5
    assert first.holder().label == "run A"
    seen: list[LockHolder] = []
    got: dict[str, float] = {}

    def take() -> None:
        got["waited"] = second.acquire(timeout_s=30, on_wait=seen.append)

    waiter = threading.Thread(target=take)
    waiter.start()
    time.sleep(1.5)
    assert waiter.is_alive(), "the second holder must wait while the first holds the lock"
    first.release()
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert got["waited"] >= 1.4
    assert [holder.label for holder in seen] == ["run A"]  # told once whom it waits for
    assert second.holder().label == "run B"
    second.check()  # still ours
    second.release()
    assert not store.exists(KEY)


def test_wait_runs_out_with_a_message_naming_the_holder(store: Store) -> None:
    first = lock(store, "reindex flow run happy-fox (1234)")
    with first.hold(timeout_s=5):
        started = time.monotonic()
        with pytest.raises(LockBusy) as busy:
            lock(store, "run B").acquire(timeout_s=1.0)
        assert 1.0 <= time.monotonic() - started < 10
        message = str(busy.value)
        assert "another reindex is running" in message
        assert "happy-fox (1234)" in message and "gave up after waiting 1 s" in message
        assert store.uri(KEY) in message and "--lock-timeout" in message
        assert first.holder().label.startswith("reindex flow run happy-fox")
    assert not store.exists(KEY)  # released on leaving the block


def test_heartbeat_keeps_a_live_holder_beyond_its_ttl(store: Store) -> None:
    first = lock(store, "run A", ttl_s=2.0)  # a beat every 0.5 s
    with first.hold(timeout_s=5):
        started = first.holder().heartbeat_at
        with pytest.raises(LockBusy):
            lock(store, "run B", ttl_s=2.0).acquire(timeout_s=5)  # 2.5 TTLs
        assert first.holder().heartbeat_at > started
        first.check()


def test_a_stale_heartbeat_is_taken_over_and_the_old_holder_cannot_publish(store: Store) -> None:
    past = time.time() - 1000  # a holder frozen for 1000 s: its stamps are old
    frozen = lock(store, "frozen run", ttl_s=60, clock=lambda: past)
    frozen.acquire(timeout_s=5)
    frozen._stop.set()  # its heartbeat thread is as frozen as it is
    successor = lock(store, "next night", ttl_s=60)
    assert successor.acquire(timeout_s=5) < 5
    assert successor.holder().label == "next night"
    with pytest.raises(LockLost, match="stops before publishing"):
        frozen.check()
    frozen.release()  # must not delete the successor's lock
    assert successor.holder().label == "next night"
    successor.release()


def test_a_vanished_holder_process_on_this_machine_is_taken_over_at_once(store: Store) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    now = time.time()
    holder = LockHolder("tok", "killed run", "here", int(dead.stdout), _process_space(),
                        now, now, 3600.0)  # fmt: skip
    assert store.put_if_absent(KEY, holder.to_bytes())
    started = time.monotonic()
    successor = lock(store, "rerun")
    successor.acquire(timeout_s=5)
    assert time.monotonic() - started < 5  # not after the hour-long TTL
    assert successor.holder().label == "rerun"
    successor.release()


def test_an_unreadable_lock_counts_as_dead(store: Store) -> None:
    store.put_bytes(KEY, b"not json")
    taker = lock(store, "rerun")
    taker.acquire(timeout_s=5)
    assert taker.holder().label == "rerun"
    taker.release()


def test_put_if_absent_lets_exactly_one_of_two_racing_callers_win(store: Store) -> None:
    key = "locks/race.json"
    results: dict[str, bool] = {}
    barrier = threading.Barrier(2)

    def attempt(name: str) -> None:
        barrier.wait()
        results[name] = store.put_if_absent(key, name.encode())

    threads = [threading.Thread(target=attempt, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results.values()) == [False, True]
    winner = next(name for name, won in results.items() if won)
    assert store.get_bytes(key) == winner.encode()
    assert not store.put_if_absent(key, b"late")
