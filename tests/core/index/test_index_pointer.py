"""CURRENT only moves forward: a version built from older inputs than the live one is
refused (and discarded), on both backends, also when two publishes race."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.core.index.test_index import publish, random_vectors
from tiefvision_core.storage.stores import Store
from tiefvision_core.vector_index.pointer import StaleIndexInputs
from tiefvision_core.vector_index.publish import IndexVersion
from tiefvision_core.vector_index.versions import versions

CURRENT = "indexes/unsupervised/CURRENT"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 versions are cached locally: keep that cache inside the test's folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def publish_at(store: Store, read_at: float | None, seed: int) -> IndexVersion:
    """A version of 40 random vectors whose inputs were read at ``read_at``."""
    return publish(store, random_vectors(40, seed=seed), inputs_read_at=read_at)


def stamp(store: Store, version: str) -> float:
    metadata = json.loads(store.get_bytes(f"indexes/unsupervised/{version}/metadata.json"))
    return metadata["inputs_read_at"]


def test_a_version_from_older_inputs_never_replaces_the_live_one(store: Store) -> None:
    read_early = time.time() - 120  # a slow run read the encodings first …
    live = publish_at(store, read_early + 60, seed=1)  # … a faster one read later, published
    assert store.read_pointer(CURRENT) == live.version
    assert stamp(store, live.version) == read_early + 60

    with pytest.raises(StaleIndexInputs, match="built from newer inputs") as refused:
        publish_at(store, read_early, seed=2)
    assert "CURRENT stays" in str(refused.value)
    assert store.read_pointer(CURRENT) == live.version
    assert versions(store, "unsupervised") == [live.version]  # the refused one is discarded

    before = time.time()
    newer = publish_at(store, None, seed=3)  # no stamp given: read now, newer than the live one
    assert store.read_pointer(CURRENT) == newer.version
    assert stamp(store, newer.version) >= before


def test_a_live_version_without_a_stamp_counts_as_oldest(store: Store) -> None:
    old = publish_at(store, time.time(), seed=4)
    key = f"indexes/unsupervised/{old.version}/metadata.json"
    metadata = json.loads(store.get_bytes(key))
    del metadata["inputs_read_at"]  # as written before the stamp existed
    store.put_bytes(key, json.dumps(metadata).encode())
    replacement = publish_at(store, 1.0, seed=5)
    assert store.read_pointer(CURRENT) == replacement.version


def test_racing_publishes_end_at_the_newest_inputs(store: Store) -> None:
    base = time.time()
    barrier = threading.Barrier(2)
    outcome: dict[float, str] = {}

    def run(read_at: float, seed: int) -> None:
        barrier.wait()
        try:
            outcome[read_at] = publish_at(store, read_at, seed).version
        except StaleIndexInputs:
            outcome[read_at] = "refused"

    threads = [
        threading.Thread(target=run, args=(base + offset, seed))
        for offset, seed in ((0.0, 6), (30.0, 7))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(outcome) == 2
    newest = outcome[base + 30.0]
    assert newest != "refused"  # the newest inputs always win, in whichever order
    assert store.read_pointer(CURRENT) == newest
