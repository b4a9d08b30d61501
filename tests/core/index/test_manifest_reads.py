"""One run reads the catalog manifest once: the encodings' plan, the current boxes, the
encodings' filter and the index's id frame all use the table the run read (they read it
four times or more before, each through its own ``read_manifest``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from tiefvision_core.catalog.ingest import ingest_catalog
from tiefvision_core.catalog.manifest import read_manifest, usable_rows
from tiefvision_core.catalog.snapshot import CatalogSnapshot
from tiefvision_core.catalog.synthetic import generate_catalog
from tiefvision_core.encoding.shards import plan_encoding, shard_prefix
from tiefvision_core.index.spaces import rebuild_space
from tiefvision_core.index.updates import update_space
from tiefvision_core.storage.layout import LOCATOR_CURRENT, MANIFEST_PREFIX, boxes_prefix
from tiefvision_core.storage.stores import LocalStore

#: A stand-in for an encoder: planning and reading encodings need its name and version only.
ENCODER = SimpleNamespace(name="fake", version="v1")
CHANNELS = 4


class CountingStore(LocalStore):
    """A local store that counts the reads of manifest files."""

    manifest_reads = 0

    def read_parquet(self, key: str, columns=None):
        if key.startswith(MANIFEST_PREFIX):
            self.manifest_reads += 1
        return super().read_parquet(key, columns)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    """6 photos ingested, box crops encoded (whole photos) and a live locator whose boxes
    cover them: every reader of the manifest in a rebuild has something to do."""
    generate_catalog(tmp_path / "catalog", products=3, views=2, seed=5, size=(64, 80))
    store = CountingStore(tmp_path / "store")
    ingest_catalog(LocalStore(tmp_path / "catalog" / "images", create=False), store)
    rows = usable_rows(read_manifest(store)).to_pylist()
    boxes = [[0, 0, r["width"], r["height"]] for r in rows]
    vectors = np.random.default_rng(0).normal(size=(len(rows), CHANNELS)).astype(np.float16)
    encoded = pa.table(
        {
            "image_id": [r["image_id"] for r in rows],
            "sha256": [r["sha256"] for r in rows],
            "box": pa.array(boxes, pa.list_(pa.int32(), 4)),
            "flipped": [False] * len(rows),
            "grid_h": pa.array([1] * len(rows), pa.int16()),
            "grid_w": pa.array([1] * len(rows), pa.int16()),
            "channels": pa.array([CHANNELS] * len(rows), pa.int32()),
            "vector": pa.array(list(vectors), pa.list_(pa.float16(), CHANNELS)),
            "reason": pa.array([None] * len(rows), pa.string()),
        }
    )
    store.write_parquet(
        shard_prefix(ENCODER.name, "box", ENCODER.version) + "shard-a.parquet", encoded
    )
    located = pa.table(
        {
            "image_id": [r["image_id"] for r in rows],
            "sha256": [r["sha256"] for r in rows],
            "box": pa.array(boxes, pa.list_(pa.int32(), 4)),
            "score": [1.0] * len(rows),
            "positions_kept": [1] * len(rows),
            "fallback": [False] * len(rows),
            "reason": pa.array([None] * len(rows), pa.string()),
        }
    )
    store.write_parquet(boxes_prefix("loc-1") + "part-a.parquet", located)
    store.publish_pointer(LOCATOR_CURRENT, "loc-1")
    store.manifest_reads = 0
    return store


def test_a_rebuild_reads_the_manifest_once(store: CountingStore) -> None:
    version = rebuild_space(store, ENCODER, "unsupervised")
    assert version.size == 6  # every photo indexed: the boxes and filters really ran
    assert store.manifest_reads == 1


def test_a_rebuild_given_the_manifest_reads_none(store: CountingStore) -> None:
    manifest = read_manifest(store)
    store.manifest_reads = 0
    catalog = CatalogSnapshot.of(store, manifest)
    rebuild_space(store, ENCODER, "unsupervised", catalog=catalog)
    update_space(store, ENCODER, "unsupervised", catalog=catalog)
    plan_encoding(store, ENCODER, kind="box", catalog=catalog)
    assert store.manifest_reads == 0


def test_an_update_and_a_plan_read_the_manifest_once_each(store: CountingStore) -> None:
    update_space(store, ENCODER, "unsupervised")
    assert store.manifest_reads == 1
    plan = plan_encoding(store, ENCODER, kind="box")
    assert plan.already_encoded == 6  # the located boxes matched the encoded crops
    assert store.manifest_reads == 2


def test_the_stages_of_one_run_share_one_read(store: CountingStore, monkeypatch) -> None:
    """What the tasks of a rebuild-index (plan the encodings, build the index) or a reindex
    run share: the run's context, found again by its key, whose catalog snapshot reads the
    table once per manifest version."""
    from tiefvision_core import run

    monkeypatch.setattr(run, "store_for", lambda settings: store)
    key = run.start_run(run.settings_for(store_url=store.uri())).key
    first = run.run_context(key).catalog.manifest
    assert run.run_context(key).catalog.manifest is first
    assert store.manifest_reads == 1
