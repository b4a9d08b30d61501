"""A catalog with rejects: every stage after ingest sees the usable rows only, so one bad
file (an empty JPEG, the catalog's own CSV files) never stops an encode, locate or index
build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tiefvision_core.catalog.ingest import ingest_catalog
from tiefvision_core.catalog.manifest import read_manifest, usable_rows
from tiefvision_core.catalog.synthetic import generate_catalog
from tiefvision_core.encoding.shards import read_encodings, shard_prefix
from tiefvision_core.storage.stores import LocalStore, Store


@pytest.fixture
def rejecting_store(tmp_path: Path) -> Store:
    """3 good photos, plus an empty ``broken.jpg`` and the generator's CSV files (rejects)."""
    generate_catalog(tmp_path / "catalog", products=3, views=1, seed=5, size=(64, 80))
    images = tmp_path / "catalog" / "images"
    (images / "broken.jpg").write_bytes(b"")
    (images / "notes.csv").write_text("image,category\n")
    store = LocalStore(tmp_path / "store")
    ingest_catalog(LocalStore(images, create=False), store)
    return store


def write_box_shard(store: Store, rows: list[dict], name: str = "shard-a.parquet") -> None:
    """A box-kind shard of whole-image crops, written like the encoding stage does."""
    table = pa.table(
        {
            "image_id": [r["image_id"] for r in rows],
            "sha256": [r["sha256"] for r in rows],
            "box": pa.array(
                [[0, 0, r["width"], r["height"]] for r in rows], pa.list_(pa.int32(), 4)
            ),
            "flipped": [False] * len(rows),
            "reason": pa.array([None] * len(rows), pa.string()),
            "vector": pa.array([np.ones(4, np.float16) for _ in rows], pa.list_(pa.float16(), 4)),
        }
    )
    store.write_parquet(shard_prefix("fake", "box", "v1") + name, table)


def test_usable_rows_are_the_ok_photos_only(rejecting_store: Store) -> None:
    manifest = read_manifest(rejecting_store)
    usable = usable_rows(manifest)
    statuses = dict(
        zip(manifest["rel_path"].to_pylist(), manifest["status"].to_pylist(), strict=True)
    )
    assert statuses["broken.jpg"] == "rejected"  # the catalog really holds rejects
    assert usable.num_rows == sum(status == "ok" for status in statuses.values()) == 3
    assert None not in usable["width"].to_pylist() + usable["height"].to_pylist()


def test_box_encodings_of_a_catalog_with_rejects_are_read(rejecting_store: Store) -> None:
    """The rejected rows have no width: reading box crops must not size them (the bug:
    ``int(None)`` in the whole-image box of every manifest row)."""
    ok = usable_rows(read_manifest(rejecting_store)).to_pylist()
    write_box_shard(rejecting_store, ok)
    table = read_encodings(rejecting_store, "fake", "v1", kind="box")
    assert sorted(table["image_id"].to_pylist()) == sorted(r["image_id"] for r in ok)
