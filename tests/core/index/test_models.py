"""The models a search by photo runs are loaded once per version (issue 31, item 4): the
supervised space's projection is not read from storage again for every upload, a locator
trained on another encoder is not either, and a new version is picked up by the next
search."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.locators import saved_locator
from tiefvision_core.errors import IncompatibleModel, InputError
from tiefvision_core.index import models
from tiefvision_core.index.spaces import space_transform
from tiefvision_core.similarity.deep_ranking import ProjectionNet
from tiefvision_core.storage.layout import SIMILARITY_CURRENT, SIMILARITY_PREFIX
from tiefvision_core.storage.stores import LocalStore

CHANNELS = 4
ENCODER = SimpleNamespace(version="enc-1")


class CountingStore(LocalStore):
    """A local store that counts the reads of each key."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def get_bytes(self, key: str) -> bytes:
        self.reads.append(key)
        return super().get_bytes(key)

    def weight_reads(self) -> int:
        return sum(key.endswith("weights.pt") for key in self.reads)


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> models.ModelCache:
    cache = models.ModelCache()
    monkeypatch.setattr(models, "MODELS", cache)
    return cache


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "store")


def save_projection(
    store: LocalStore,
    version: str,
    scale: float,
    *,
    encoder_version: str = "enc-1",
    channels: int = CHANNELS,
) -> None:
    """A 1×1 projection that multiplies the maps by ``scale``, made ``CURRENT``."""
    net = ProjectionNet(channels)
    with torch.no_grad():
        net.conv.weight.mul_(scale)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    metadata = {"version": version, "encoder_version": encoder_version, "channels": channels}
    store.put_bytes(f"{SIMILARITY_PREFIX}{version}/weights.pt", buffer.getvalue())
    store.put_bytes(f"{SIMILARITY_PREFIX}{version}/metadata.json", json.dumps(metadata).encode())
    store.publish_pointer(SIMILARITY_CURRENT, version)


MAPS = np.ones((1, CHANNELS, 3, 3), np.float32)


def test_two_supervised_queries_read_the_projection_once(store: CountingStore) -> None:
    """What a supervised-space upload pays per request: the model's files are read by the
    first one alone (before: weights and metadata read again for every upload)."""
    save_projection(store, "sim-1", 2.0)
    source = {"model_version": "sim-1"}  # what the supervised index records
    first = space_transform(store, "supervised", ENCODER, source)
    second = space_transform(store, "supervised", ENCODER, source)
    assert first is not None and second is not None
    np.testing.assert_allclose(first(MAPS), 2.0 * MAPS, rtol=1e-6)
    np.testing.assert_allclose(second(MAPS), 2.0 * MAPS, rtol=1e-6)
    assert store.weight_reads() == 1
    assert sum(key.endswith("metadata.json") for key in store.reads) == 1


def test_a_new_similarity_version_is_picked_up(store: CountingStore) -> None:
    """No recorded version: the one ``CURRENT`` names, read at every query."""
    save_projection(store, "sim-1", 2.0)
    transform = space_transform(store, "supervised", ENCODER)
    assert transform is not None
    np.testing.assert_allclose(transform(MAPS), 2.0 * MAPS, rtol=1e-6)
    save_projection(store, "sim-2", 3.0)
    transform = space_transform(store, "supervised", ENCODER)
    assert transform is not None
    np.testing.assert_allclose(transform(MAPS), 3.0 * MAPS, rtol=1e-6)
    # The version an index records still answers with its own model.
    pinned = space_transform(store, "supervised", ENCODER, {"model_version": "sim-1"})
    assert pinned is not None
    np.testing.assert_allclose(pinned(MAPS), 2.0 * MAPS, rtol=1e-6)
    assert store.weight_reads() == 2


def test_projection_errors_are_not_cached(store: CountingStore) -> None:
    with pytest.raises(InputError, match="train-triplets"):
        models.similarity_projection(store, ENCODER)
    save_projection(store, "sim-1", 2.0, encoder_version="enc-0")
    for _ in range(2):
        with pytest.raises(IncompatibleModel):
            models.similarity_projection(store, ENCODER)
    save_projection(store, "sim-2", 2.0)  # the encoder's model now: loads
    assert isinstance(models.similarity_projection(store, ENCODER), ProjectionNet)


def test_a_locator_of_another_encoder_is_read_once(
    store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It is never used (the whole photo is searched) and its files never change: uploads
    do not read its metadata again (before: every upload did)."""
    saved_locator(store)  # trained on fake-1
    encoder = SimpleNamespace(version="another-encoder")
    assert models.current_locator(store, encoder) is None
    before = len(store.reads)
    assert models.current_locator(store, encoder) is None
    assert [key.rsplit("/", 1)[-1] for key in store.reads[before:]] == ["CURRENT"]


def test_the_locator_is_cached_per_version(store: CountingStore) -> None:
    encoder = SimpleNamespace(version="fake-1")
    first = saved_locator(store)
    assert models.current_locator(store, encoder) is models.current_locator(store, encoder)
    newer = saved_locator(store, 21.0)
    located = models.current_locator(store, encoder)
    assert located is not None and located.version == newer.version != first.version
    assert store.weight_reads() == 2


def test_the_cache_keeps_the_most_recently_used() -> None:
    cache = models.ModelCache(keep=2)
    store = SimpleNamespace(uri=lambda: "file:///s")
    loads: list[str] = []

    def get(version: str) -> object:
        return cache.get("kind", store, version, "enc", lambda: loads.append(version) or version)

    get("a")
    get("b")
    get("a")  # a used last: b goes first
    get("c")
    assert [key[2] for key in cache.cached_keys()] == ["a", "c"]
    get("a")
    get("b")
    assert loads == ["a", "b", "c", "b"]


def test_searches_that_miss_at_once_load_once() -> None:
    cache = models.ModelCache()
    store = SimpleNamespace(uri=lambda: "file:///s")
    started, release = threading.Event(), threading.Event()
    loads: list[int] = []

    def load() -> object:
        loads.append(1)
        started.set()
        release.wait(5)
        return "model"

    got: list[object] = []
    threads = [
        threading.Thread(target=lambda: got.append(cache.get("k", store, "v", "e", load)))
        for _ in range(4)
    ]
    threads[0].start()
    assert started.wait(5)
    for thread in threads[1:]:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(5)
    assert got == ["model"] * 4 and loads == [1]
