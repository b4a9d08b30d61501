"""The store lock in flows under a real Prefect server: rebuild-index takes the reindex's
lock (a second rebuild, or one beside a reindex, waits or gives up naming the holder), and
the run that breaks a dead holder's lock marks that holder's flow run Crashed.

The rebuild's stages (encode, build, report) are replaced by recorders: what is under test
is which run may be between "read encodings" and "publish" at a time, not the index."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Running, StateType

from tests.core.storage.test_store_lock import dead_holder
from tiefvision_core.storage.lock import LockBusy, StoreLock
from tiefvision_core.storage.stores import LocalStore

pytestmark = [pytest.mark.usefixtures("prefect_harness")]

KEY = "locks/reindex.json"


class Stages:
    """Stands in for the rebuild's encode and build: records when each run was inside (and
    who held the store lock then), taking ``seconds`` there."""

    def __init__(self, store: LocalStore, seconds: float) -> None:
        self.store, self.seconds = store, seconds
        self.inside: list[tuple[float, float, str]] = []
        self._guard = threading.Lock()

    def encode(self, **_: object) -> None:
        entered = time.monotonic()
        holder = self.store.holder_label()
        time.sleep(self.seconds)
        with self._guard:
            self.inside.append((entered, time.monotonic(), holder))

    def build(self, *_: object) -> SimpleNamespace:
        return SimpleNamespace(version="a version", gate=None)  # no gate ran


@pytest.fixture
def rebuild(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """``rebuild(seconds)`` → (the rebuild-index flow with recording stages, its store)."""
    import flows.rebuild_index

    store = LockView(tmp_path / "store")

    def make(seconds: float) -> tuple[Stages, str]:
        stages = Stages(store, seconds)
        monkeypatch.setattr(flows.rebuild_index, "encode", stages.encode)
        monkeypatch.setattr(flows.rebuild_index, "build_space_index", stages.build)
        monkeypatch.setattr(flows.rebuild_index, "report_index", lambda version: None)
        monkeypatch.setattr(flows.rebuild_index, "report_gate", lambda comparison: None)
        return stages, store.url

    return make


class LockView(LocalStore):
    def holder_label(self) -> str:
        lock = StoreLock(self, "reindex", label="observer")
        holder = lock.holder()
        return holder.label if holder else "nobody"


def test_rebuild_index_waits_for_a_reindex_holding_the_store(rebuild) -> None:
    from flows.rebuild_index import rebuild_index

    stages, url = rebuild(0.0)
    reindex = StoreLock(LocalStore(url.removeprefix("file://")), "reindex",
                        label="reindex flow run busy-fox (1234)", ttl_s=30)  # fmt: skip
    reindex.acquire(timeout_s=5)
    releaser = threading.Timer(2.0, reindex.release)
    started = time.monotonic()
    releaser.start()
    try:
        rebuild_index(store=url, lock_timeout=60)
    finally:
        releaser.join()
    [(entered, _, holder)] = stages.inside
    assert entered - started >= 1.9, "the rebuild read encodings while the reindex held the lock"
    assert holder.startswith("rebuild-index flow run ")
    assert not LocalStore(url.removeprefix("file://")).exists(KEY)  # released at the end


def test_rebuild_index_gives_up_naming_the_holder(rebuild) -> None:
    from flows.rebuild_index import rebuild_index

    stages, url = rebuild(0.0)
    reindex = StoreLock(LocalStore(url.removeprefix("file://")), "reindex",
                        label="reindex flow run busy-fox (1234)", ttl_s=30)  # fmt: skip
    busy = pytest.raises(LockBusy, match=r"busy-fox \(1234\).*gave up after waiting 1 s")
    with reindex.hold(timeout_s=5), busy:
        rebuild_index(store=url, lock_timeout=1.0)
    assert stages.inside == []


def test_two_rebuilds_at_once_take_turns(rebuild) -> None:
    from flows.rebuild_index import rebuild_index

    stages, url = rebuild(3.0)  # longer than a flow run takes to start
    errors: list[BaseException] = []

    def run() -> None:
        try:
            rebuild_index(store=url, lock_timeout=120)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    first, second = sorted(stages.inside)
    assert second[0] >= first[1], f"both rebuilds were inside at once: {stages.inside}"
    assert first[2] != second[2] and all(h.startswith("rebuild-index") for *_, h in stages.inside)


# -- a dead holder's flow run is marked Crashed ---------------------------------------------
@flow(name="victim")
def victim() -> None:
    """Only its flow run is used: created Running, as a SIGKILLed run is left."""


@flow(name="lock-taker")
def take_the_lock(store_url: str) -> str:
    from tasks.store_lock import store_lock

    with store_lock(store_url, 5, 30, job="lock-taker") as lock:
        return lock.holder().label


def test_breaking_a_dead_holders_lock_marks_its_flow_run_crashed(tmp_path: Path) -> None:
    with get_client(sync_client=True) as client:
        dead_run = client.create_flow_run(victim, state=Running())
        done_run = client.create_flow_run(victim, state=Running())
    store = LocalStore(tmp_path / "store")
    holder = dead_holder(str(dead_run.id), label=f"reindex flow run killed ({dead_run.id})")
    assert store.put_if_absent(KEY, holder.to_bytes())

    assert take_the_lock(store.url).startswith("lock-taker flow run ")

    with get_client(sync_client=True) as client:
        crashed = client.read_flow_run(dead_run.id).state
        untouched = client.read_flow_run(done_run.id).state
    assert crashed.type == StateType.CRASHED, crashed
    assert f"its process {holder.pid}" in (crashed.message or "")
    assert untouched.type == StateType.RUNNING  # only the lock's holder


def test_an_unreachable_prefect_server_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from tasks.store_lock import mark_crashed
    from tests.conftest import free_port

    logger = logging.getLogger("test-lock")
    down = f"http://127.0.0.1:{free_port()}/api"
    started = time.monotonic()
    with (
        temporary_settings({PREFECT_API_URL: down, PREFECT_CLIENT_MAX_RETRIES: 0}),
        caplog.at_level(logging.WARNING, logger="test-lock"),
    ):
        assert not mark_crashed("0b1e5a8e-0000-4000-8000-000000000000", "gone", logger)
    assert time.monotonic() - started < 60
    assert "could not mark flow run 0b1e5a8e" in caplog.text


def test_rebuild_index_cli_gives_up_in_one_line_naming_the_holder(tmp_path: Path) -> None:
    from tests.cli import run_cli
    from tests.conftest import harness_api_url

    store = LocalStore(tmp_path / "store")
    reindex = StoreLock(store, "reindex", label="reindex flow run busy-fox (1234)", ttl_s=30)
    env = {"PREFECT_API_URL": harness_api_url(), "PREFECT_LOGGING_LEVEL": "ERROR"}
    with reindex.hold(timeout_s=5):
        done = run_cli("rebuild-index", "--store", store.url, "--lock-timeout", "1", env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "busy-fox (1234)" in last and "--lock-timeout" in last, done.stderr[-3000:]
