"""Garbage collection on a store built without Prefect: dead rows leave their shards (a
shard with live rows is rewritten, one without any deleted), versions beyond the retention
go but never the live one, old leftovers go and young ones stay, a dry run deletes
nothing and lists what the real run then removes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.core.catalog.test_usable_rows import rejecting_store, write_box_shard  # noqa: F401
from tests.core.index.test_index import PREFIX, publish, random_vectors
from tiefvision_core.annotations.repository import AnnotationDatabase
from tiefvision_core.catalog.ingest import ingest_catalog
from tiefvision_core.catalog.manifest import read_manifest, usable_rows
from tiefvision_core.catalog.synthetic import generate_catalog
from tiefvision_core.encoding.shards import read_encodings, shard_prefix
from tiefvision_core.errors import ConfigError
from tiefvision_core.pipeline.gc import Retention, collect_garbage
from tiefvision_core.storage.stores import LocalStore, Store
from tiefvision_core.vector_index.versions import open_index, use_version, versions

SHARDS = shard_prefix("fake", "box", "v1")


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def littered(rejecting_store: Store) -> Store:  # noqa: F811
    """Live rows and dead ones (a re-shot photo's old bytes, a photo gone), three index
    versions with the oldest one live, an old and a young temporary file."""
    store = rejecting_store
    ok = usable_rows(read_manifest(store)).to_pylist()
    write_box_shard(store, ok)  # shard-a: all live
    reshot = {**ok[0], "sha256": "0" * 64}
    gone = {**ok[1], "image_id": "gone-photo", "sha256": "1" * 64}
    write_box_shard(store, [ok[2], reshot], "shard-b.parquet")
    write_box_shard(store, [gone], "shard-c.parquet")
    made = [publish(store, random_vectors(20, seed=s)) for s in range(3)]
    use_version(store, "unsupervised", made[0].version)  # rolled back: the oldest is live
    root = store.root
    old, young = root / "encodings" / ".tmp-old.parquet", root / "encodings" / ".tmp-new.parquet"
    old.write_bytes(b"x" * 100)
    young.write_bytes(b"y" * 100)
    past = time.time() - 3 * 3600
    os.utime(old, (past, past))
    return store


def test_dry_run_deletes_nothing_and_the_real_run_removes_what_it_listed(
    littered: Store,
) -> None:
    store = littered
    root = store.root
    before = snapshot(root)
    retention = Retention(versions=1, grace_s=3600)
    planned = collect_garbage(store, retention, dry_run=True)
    assert snapshot(root) == before
    assert planned.dry_run and planned.bytes > 0
    for item in planned.items:
        if item.action == "delete" and item.key in before:
            assert item.bytes == len(before[item.key])

    done = collect_garbage(store, retention)
    assert [(i.what, i.key, i.action) for i in done.items] == [
        (i.what, i.key, i.action) for i in planned.items
    ]
    after = snapshot(root)
    assert all(i.key not in after for i in done.items if i.action == "delete")


def test_dead_rows_versions_and_old_leftovers_go_the_live_index_stays(
    littered: Store,
) -> None:
    store = littered
    live = store.read_pointer(PREFIX + "CURRENT")
    ok = usable_rows(read_manifest(store)).to_pylist()
    report = collect_garbage(store, Retention(versions=1, grace_s=3600))

    assert versions(store, "unsupervised") == [live]  # the two newer ones went, not the live
    assert open_index(store, "unsupervised").version == live
    shards = sorted(i.key.rsplit("/", 1)[-1] for i in store.list(SHARDS))
    assert "shard-a.parquet" in shards and "shard-c.parquet" not in shards
    assert "shard-b.parquet" not in shards and len(shards) == 2  # b rewritten under a new key
    rows = read_encodings(store, "fake", "v1", kind="box", current_only=False)
    keys = set(zip(rows["image_id"].to_pylist(), rows["sha256"].to_pylist(), strict=True))
    assert keys == {(r["image_id"], r["sha256"]) for r in ok}
    for info in store.list(SHARDS):  # no shard mentions the dead rows any more
        table = store.read_parquet(info.key, ["sha256"])
        assert not {"0" * 64, "1" * 64} & set(table["sha256"].to_pylist())
    root = store.root
    assert not (root / "encodings" / ".tmp-old.parquet").exists()
    assert (root / "encodings" / ".tmp-new.parquet").exists()  # younger than the grace
    assert report.totals["index"]["objects"] == 2


def test_retention_must_keep_the_live_version() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        Retention(versions=0)


def test_versions_and_old_work_lists_go_on_both_backends(store: Store) -> None:
    made = [publish(store, random_vectors(20, seed=s)) for s in range(3)]
    store.put_bytes(f"{PREFIX}20200101T000000000000Z-exact/vectors.npy", b"\0" * 64)  # killed
    plan = shard_prefix("fake", "box", "v1") + "_plans/p.parquet"
    store.put_bytes(plan, b"plan")
    before = sorted((i.key, i.size) for i in store.list(""))

    planned = collect_garbage(store, Retention(versions=2, grace_s=3600), dry_run=True)
    assert sorted((i.key, i.size) for i in store.list("")) == before
    assert planned.totals["index"]["objects"] == 2  # the oldest finished and the killed one
    assert "temporary" not in planned.totals  # the work list is younger than the grace

    done = collect_garbage(store, Retention(versions=2, grace_s=0))
    assert versions(store, "unsupervised") == [made[1].version, made[2].version]
    assert not list(store.list(f"{PREFIX}20200101T000000000000Z-exact/"))
    assert not store.exists(plan) and done.totals["temporary"]["objects"] == 1
    assert open_index(store, "unsupervised").version == made[2].version


# -- a removed photo's annotations, snapshots and crops --------------------------------------
def _crops_dataset(store: Store, name: str, rows: list[dict]) -> None:
    """A finished crops dataset as the locator's crops stage lays it out: its work list and
    maps name the annotated photos (image_id, sha256)."""
    work = [{**r, "box": [0, 0, 8, 8], "split": "train"} for r in rows]
    store.write_parquet(f"crops/{name}/_work.parquet", pa.Table.from_pylist(work))
    maps = [{"image_id": r["image_id"], "sha256": r["sha256"], "side": 320} for r in rows]
    store.write_parquet(f"crops/{name}/maps/part-0.parquet", pa.Table.from_pylist(maps))
    store.put_bytes(f"crops/{name}/dataset.json", b"{}")


def test_a_removed_photo_leaves_no_annotation_snapshot_or_crops_once_retention_passed(
    tmp_path: Path,
) -> None:
    generate_catalog(tmp_path / "catalog", products=3, views=2, seed=3, size=(96, 120))
    images = tmp_path / "catalog" / "images"
    store = LocalStore(tmp_path / "store")
    ingest_catalog(LocalStore(images, create=False), store)
    manifest = read_manifest(store)
    rows = {r["rel_path"]: r for r in manifest.to_pylist()}
    gone, kept, second, other = (
        rows[p]["image_id"]
        for p in ("p0001/view-1.jpg", "p0000/view-1.jpg", "p0000/view-2.jpg", "p0002/view-1.jpg")
    )
    with AnnotationDatabase(f"sqlite:///{tmp_path / 'annotations.sqlite'}") as db:
        for image_id in (gone, kept):
            db.set_box(image_id, (1, 1, 50, 50), manifest=manifest)
        db.add_triplet(kept, gone, other, manifest=manifest)
        db.add_triplet(kept, second, other, manifest=manifest)
        snapshots = [db.export_snapshot(store, kind) for kind in ("boxes", "triplets")]
        columns = ["image_id", "sha256", "source_uri", "width", "height"]
        usable = usable_rows(manifest).select(columns).to_pylist()
        _crops_dataset(store, "with-gone", [r for r in usable if r["image_id"] in (gone, kept)])
        _crops_dataset(store, "without", [r for r in usable if r["image_id"] == kept])
        store.publish_pointer("crops/LATEST", "with-gone")
        (images / "p0001" / "view-1.jpg").unlink()
        ingest_catalog(LocalStore(images, create=False), store)

        # Retention 2: the previous manifest still lists the photo, so all of it stays.
        early = collect_garbage(store, Retention(versions=2, grace_s=0), annotations=db)
        assert not {"annotations", "snapshots", "crops"} & set(early.totals)
        assert db.get_box(gone) is not None

        before = snapshot(store.root)
        planned = collect_garbage(
            store, Retention(versions=1, grace_s=0), dry_run=True, annotations=db
        )
        assert snapshot(store.root) == before and db.get_box(gone) is not None
        named = {i.key for i in planned.items if i.what == "annotations"}
        assert named == {f"annotations:boxes/{gone}", f"annotations:triplets/{kept},{gone},{other}"}

        done = collect_garbage(store, Retention(versions=1, grace_s=0), annotations=db)
        assert [(i.what, i.key) for i in done.items] == [(i.what, i.key) for i in planned.items]
        assert db.get_box(gone) is None and db.get_box(kept) is not None
        assert set(db.triplets()["positive"]) == {second}
        left = {**db.boxes().to_dict("list"), **db.triplets().to_dict("list")}
    assert not any(gone in map(str, values) for values in left.values())
    for file in tmp_path.glob("annotations.sqlite*"):  # nor the database's bytes
        assert gone.encode() not in file.read_bytes(), file
    assert not any(store.exists(s.key) for s in snapshots)
    assert not list(store.list("crops/with-gone/")) and store.read_pointer("crops/LATEST") is None
    assert list(store.list("crops/without/"))  # names only photos still in the catalog
    for path in store.root.rglob("*.parquet"):  # nothing on storage names the photo
        assert gone not in json.dumps(pq.read_table(path).to_pylist(), default=str), path
