"""The locate stage's shards load each locator version once per process, from the same
cache as the searches by photo (``tiefvision_core.index.models``): every shard of a run
would otherwise read the weights from storage again."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from tiefvision_core.errors import IncompatibleModel
from tiefvision_core.index.models import MODELS, current_locator, locator_model
from tiefvision_core.locator import model_files
from tiefvision_core.storage.layout import LOCATOR_CURRENT
from tiefvision_core.storage.stores import LocalStore


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []

    def load(store: object, version: str, *, encoder_version: str) -> object:
        seen.append((version, encoder_version))
        if encoder_version == "other":
            raise IncompatibleModel(f"{version} was trained on enc-1, not other")
        return object()

    monkeypatch.setattr(model_files, "load_locator", load)
    MODELS.clear()
    yield seen
    MODELS.clear()


def test_a_locator_version_is_loaded_once_per_process(loads: list, tmp_path) -> None:
    store = LocalStore(str(tmp_path))
    first = locator_model(store, "loc-1", "enc-1")
    assert locator_model(store, "loc-1", "enc-1") is first
    assert loads == [("loc-1", "enc-1")]


def test_another_version_or_encoder_is_loaded_on_its_own(loads: list, tmp_path) -> None:
    store = LocalStore(str(tmp_path))
    one = locator_model(store, "loc-1", "enc-1")
    assert locator_model(store, "loc-2", "enc-1") is not one
    assert locator_model(store, "loc-1", "enc-2") is not one
    assert loads == [("loc-1", "enc-1"), ("loc-2", "enc-1"), ("loc-1", "enc-2")]


def test_the_locate_stage_and_the_searches_share_one_load(loads: list, tmp_path) -> None:
    store = LocalStore(str(tmp_path))
    store.publish_pointer(LOCATOR_CURRENT, "loc-1")
    first = locator_model(store, "loc-1", "enc-1")  # as a locate shard loads it
    searched = current_locator(store, SimpleNamespace(version="enc-1"))  # type: ignore[arg-type]
    assert searched is first
    assert loads == [("loc-1", "enc-1")]


def test_an_unusable_locator_is_read_once_and_named_each_time(loads: list, tmp_path) -> None:
    store = LocalStore(str(tmp_path))
    for _ in range(2):
        with pytest.raises(IncompatibleModel, match="trained on enc-1"):
            locator_model(store, "loc-1", "other")
    assert loads == [("loc-1", "other")]
