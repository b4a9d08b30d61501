"""The store lock on local disk and on the real S3 server: one holder at a time, the second
waits then takes it after release or gives up with a message naming the holder, dead
holders (stale heartbeat or a vanished process) are taken over, and a holder whose lock was
broken learns it before publishing."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from tiefvision_core.storage.lock import LockBusy, LockHolder, LockLost, StoreLock, _process_space
from tiefvision_core.storage.stores import Store

KEY = "locks/reindex.json"


def _race(attempt: Callable[[str], bool], names: tuple[str, ...] = ("a", "b")) -> dict[str, bool]:
    """Each name's ``attempt`` started at the same instant from its own thread."""
    results: dict[str, bool] = {}
    barrier = threading.Barrier(len(names))

    def run(name: str) -> None:
        barrier.wait()
        results[name] = attempt(name)

    threads = [threading.Thread(target=run, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


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
        assert "another run holds this store's reindex lock" in message
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


def dead_holder(run_id: str = "", label: str = "killed run") -> LockHolder:
    """A lock record of a process of this machine that has exited, fresh heartbeat."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    now = time.time()
    return LockHolder("tok", label, "here", int(dead.stdout), _process_space(),
                      now, now, 3600.0, run_id)  # fmt: skip


def test_a_vanished_holder_process_on_this_machine_is_taken_over_at_once(store: Store) -> None:
    holder = dead_holder("run-1234")
    assert store.put_if_absent(KEY, holder.to_bytes())
    started = time.monotonic()
    successor = lock(store, "rerun", flow_run_id="run-5678")
    broken: list[tuple[LockHolder, str]] = []
    successor.acquire(timeout_s=5, on_break=lambda dead, why: broken.append((dead, why)))
    assert time.monotonic() - started < 5  # not after the hour-long TTL
    assert successor.holder().label == "rerun"
    assert successor.holder().flow_run_id == "run-5678"
    assert [(dead.flow_run_id, f"its process {holder.pid}" in why) for dead, why in broken] == [
        ("run-1234", True)
    ]  # told once whose lock it broke, with the flow run recorded in it
    successor.release()


def test_two_runs_breaking_one_stale_lock_leave_one_holder_told_once(store: Store) -> None:
    assert store.put_if_absent(KEY, dead_holder("run-dead").to_bytes())
    takers = {name: lock(store, name) for name in ("a", "b")}
    broken: list[str] = []
    outcome: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def take(name: str) -> None:
        barrier.wait()
        try:
            takers[name].acquire(timeout_s=3, on_break=lambda dead, why: broken.append(name))
            outcome[name] = "holds"
        except LockBusy:
            outcome[name] = "busy"

    threads = [threading.Thread(target=take, args=(name,)) for name in takers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcome.values()) == ["busy", "holds"]
    winner = next(name for name, result in outcome.items() if result == "holds")
    assert broken == [winner]
    assert takers[winner].holder().label == winner
    takers[winner].release()
    assert not store.exists(KEY)


def test_an_unreadable_lock_counts_as_dead(store: Store) -> None:
    store.put_bytes(KEY, b"not json")
    taker = lock(store, "rerun")
    taker.acquire(timeout_s=5)
    assert taker.holder().label == "rerun"
    taker.release()


def test_put_if_absent_lets_exactly_one_of_two_racing_callers_win(store: Store) -> None:
    key = "locks/race.json"
    results = _race(lambda name: store.put_if_absent(key, name.encode()))
    assert sorted(results.values()) == [False, True]
    winner = next(name for name, won in results.items() if won)
    assert store.get_bytes(key) == winner.encode()
    assert not store.put_if_absent(key, b"late")


# -- compare-and-swap: a holder judged stale never overwrites or deletes its successor ------
def test_replace_if_and_delete_if_act_only_on_the_expected_bytes(store: Store) -> None:
    key = "locks/cas.json"
    assert not store.replace_if(key, b"anything", b"new")  # absent: nothing to replace
    assert not store.exists(key)
    store.put_bytes(key, b"first")
    assert not store.replace_if(key, b"other", b"second")
    assert store.get_bytes(key) == b"first"
    assert store.replace_if(key, b"first", b"second")
    assert store.get_bytes(key) == b"second"
    assert not store.delete_if(key, b"first")
    assert store.get_bytes(key) == b"second"
    assert store.delete_if(key, b"second")
    assert not store.exists(key)
    assert not store.delete_if(key, b"second")
    assert [info.key for info in store.list("locks/")] == []  # no sidecar is listed


def test_replace_if_lets_exactly_one_of_two_racing_swaps_win(store: Store) -> None:
    key = "locks/cas-race.json"
    store.put_bytes(key, b"stale")
    results = _race(lambda name: store.replace_if(key, b"stale", name.encode()))
    assert sorted(results.values()) == [False, True]
    winner = next(name for name, won in results.items() if won)
    assert store.get_bytes(key) == winner.encode()


class TakeoverAfterNextRead:
    """The store as one lock holder sees it: once armed, a successor's takeover lands right
    after the holder's next read of the lock — the moment between judging the record its
    own and writing over it."""

    def __init__(self, store: Store, successor: LockHolder) -> None:
        self._store, self.successor, self.armed = store, successor, False

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def get_bytes(self, key: str) -> bytes:
        data = self._store.get_bytes(key)
        if self.armed and key == KEY:
            self.armed = False
            self._store.put_bytes(KEY, self.successor.to_bytes())
        return data


def successor_record() -> LockHolder:
    now = time.time()
    return LockHolder("successor", "next night", "elsewhere", 1, "", now, now, 3600.0)


def test_a_heartbeat_after_a_takeover_leaves_the_new_holder_and_the_old_one_learns(
    store: Store,
) -> None:
    successor = successor_record()
    view = TakeoverAfterNextRead(store, successor)
    old = lock(view, "frozen run", ttl_s=0.8)  # a beat every 0.2 s
    old.acquire(timeout_s=5)
    view.armed = True
    deadline = time.monotonic() + 30
    while view.armed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not view.armed, "the heartbeat never read the lock"
    time.sleep(2.5)  # the beat that was under way, and any later one (S3: read-back 1 s)
    assert store.get_bytes(KEY) == successor.to_bytes(), "a heartbeat overwrote the successor"
    with pytest.raises(LockLost, match="stops before publishing"):
        old.check()
    old.release()
    assert store.get_bytes(KEY) == successor.to_bytes(), "release deleted the successor's lock"


def test_a_release_racing_a_takeover_deletes_nothing(store: Store) -> None:
    successor = successor_record()
    view = TakeoverAfterNextRead(store, successor)
    old = lock(view, "slow run", ttl_s=60)  # no heartbeat during the test
    old.acquire(timeout_s=5)
    old.check()
    view.armed = True
    old.release()
    assert not view.armed
    assert store.get_bytes(KEY) == successor.to_bytes(), "release deleted the successor's lock"
