"""``tasks.locator`` keeps one locator model per (store, version, encoder version) in a
process, the way ``tasks.encoding.get_runtime`` keeps one runtime: every shard of a run
would otherwise read the weights from storage again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import tasks.locator as locator_tasks
from tiefvision_core.locator import model_files


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []

    def load(store: object, version: str, *, encoder_version: str) -> object:
        seen.append((version, encoder_version))
        return object()

    monkeypatch.setattr(model_files, "load_locator", load)
    monkeypatch.setattr(locator_tasks, "get_store", lambda url: url)
    locator_tasks._model.cache_clear()
    yield seen
    locator_tasks._model.cache_clear()


def test_a_locator_version_is_loaded_once_per_process(loads: list) -> None:
    first = locator_tasks._model("file:///s", "loc-1", "enc-1")
    assert locator_tasks._model("file:///s", "loc-1", "enc-1") is first
    assert loads == [("loc-1", "enc-1")]


def test_another_version_or_encoder_is_loaded_on_its_own(loads: list) -> None:
    one = locator_tasks._model("file:///s", "loc-1", "enc-1")
    assert locator_tasks._model("file:///s", "loc-2", "enc-1") is not one
    assert locator_tasks._model("file:///s", "loc-1", "enc-2") is not one
    assert loads == [("loc-1", "enc-1"), ("loc-2", "enc-1"), ("loc-1", "enc-2")]
