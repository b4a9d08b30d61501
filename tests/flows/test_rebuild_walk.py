"""The walk of the store through one ``rebuild-index`` (issue 31): how often the command,
its flow and its tasks open the store, build the settings, read the catalog manifest and
read the current locator's box parts — counted on the real command, in-process, under the
test Prefect server.

Before the run context (``tiefvision_core.run``) one rebuild built the settings 5 times
(the CLI's checks, the flow's and the encode subflow's ``runtime_config``, the task
runner's choice, ``tasks.stores.get_store → open_store``), opened the store 2 times (the
CLI's checks, ``get_store``), read the manifest once and every box part twice
(``plan_encoding → located_boxes``, then ``rebuild_space → … → current_boxes →
located_boxes``).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import harness_api_url
from tiefvision_core.catalog.ingest import ingest_catalog
from tiefvision_core.catalog.manifest import read_manifest, usable_rows
from tiefvision_core.catalog.synthetic import generate_catalog
from tiefvision_core.storage import layout
from tiefvision_core.storage.stores import LocalStore

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

#: The project's packages, where a function imported by name is looked up and wrapped.
_PACKAGES = ("tiefvision_core", "tiefvision_cli", "tasks", "flows")


class Walk:
    """What one run did to the store, counted by wrapping the functions and methods every
    path goes through (a function imported by name elsewhere is wrapped there too)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: Counter[str] = Counter()
        self._monkeypatch = monkeypatch

    def function(self, module: object, name: str, label: str) -> None:
        original = getattr(module, name)

        @wraps(original)
        def counted(*args, **kwargs):
            self.counts[label] += 1
            return original(*args, **kwargs)

        for loaded in list(sys.modules.values()):
            if getattr(loaded, "__name__", "").split(".")[0] in _PACKAGES:
                for attr, value in list(vars(loaded).items()):
                    if value is original:
                        self._monkeypatch.setattr(loaded, attr, counted)

    def method(self, cls: type, name: str, count: Callable[[tuple, dict], str | None]) -> None:
        original = getattr(cls, name)

        @wraps(original)
        def counted(*args, **kwargs):
            label = count(args, kwargs)
            if label:
                self.counts[label] += 1
            return original(*args, **kwargs)

        self._monkeypatch.setattr(cls, name, counted)


def _read_label(args: tuple, kwargs: dict) -> str | None:
    key = str(args[1] if len(args) > 1 else kwargs["key"])
    if key.startswith(layout.MANIFEST_PREFIX):
        return "manifest reads"
    if key.startswith(layout.BOXES_PREFIX):
        return "box part reads"
    return None


@pytest.fixture
def walk(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Walk]:
    """The counters, started once the store is set up (``store_url``)."""
    # Every module a rebuild runs, imported before wrapping (their names are then found).
    import flows.rebuild_index  # noqa: F401
    import tiefvision_cli.commands.index
    import tiefvision_cli.preflight  # noqa: F401
    from tiefvision_core import config
    from tiefvision_core.storage import urls

    counter = Walk(monkeypatch)
    counter.function(urls, "open_store", "store opens")
    counter.method(config.Settings, "__init__", lambda a, k: "settings built")
    counter.method(LocalStore, "__init__", lambda a, k: "store objects")
    counter.method(LocalStore, "read_parquet", _read_label)
    yield counter


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """6 photos ingested and a live locator whose boxes (a margin inside each photo) cover
    them all: the box crops the rebuild encodes are the located ones."""
    generate_catalog(tmp_path / "catalog", products=3, views=2, seed=5, size=(64, 80))
    store = LocalStore(tmp_path / "store")
    ingest_catalog(LocalStore(tmp_path / "catalog" / "images", create=False), store)
    rows = usable_rows(read_manifest(store)).to_pylist()
    located = pa.table(
        {
            "image_id": [r["image_id"] for r in rows],
            "sha256": [r["sha256"] for r in rows],
            "box": pa.array(
                [[4, 4, r["width"] - 4, r["height"] - 4] for r in rows], pa.list_(pa.int32(), 4)
            ),
            "score": [1.0] * len(rows),
            "positions_kept": [1] * len(rows),
            "fallback": [False] * len(rows),
            "reason": pa.array([None] * len(rows), pa.string()),
        }
    )
    store.write_parquet(layout.boxes_prefix("loc-1") + "part-a.parquet", located)
    store.write_parquet(layout.boxes_prefix("loc-1") + "part-b.parquet", located.slice(0, 0))
    store.publish_pointer(layout.current_key(layout.LOCATOR_PREFIX), "loc-1")
    return store.uri()


def test_one_rebuild_walks_the_store_once(walk: Walk, store_url: str, monkeypatch, capsys) -> None:
    """The numbers of the module docstring, after: the settings built once from the flags
    (the CLI's checks; the flow, its subflow and the store lock find them again) and once
    from the environment alone (the task runner's choice, which reads no flag), the store
    opened once, the manifest read once and each box part once."""
    from tiefvision_cli.commands.index import rebuild_index

    monkeypatch.setenv("PREFECT_API_URL", harness_api_url())
    monkeypatch.setenv("TIEFVISION_DEVICE", "cpu")
    rebuild_index(store=store_url, as_json=True)
    published = json.loads(capsys.readouterr().out)
    assert published["size"] == 6  # every photo indexed: the boxes and filters really ran
    assert walk.counts == {
        "settings built": 2,
        "store opens": 1,
        "store objects": 1,
        "manifest reads": 1,
        "box part reads": 2,  # two parts, each read once
    }
