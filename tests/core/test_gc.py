"""Garbage collection on a store built without Prefect: dead rows leave their shards (a
shard with live rows is rewritten, one without any deleted), versions beyond the retention
go but never the live one, old leftovers go and young ones stay, a dry run deletes
nothing and lists what the real run then removes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.core.catalog.test_usable_rows import rejecting_store, write_box_shard  # noqa: F401
from tests.core.index.test_index import PREFIX, publish, random_vectors
from tiefvision_core.catalog.ingest import read_manifest, usable_rows
from tiefvision_core.encoding.shards import read_encodings, shard_prefix
from tiefvision_core.errors import ConfigError
from tiefvision_core.gc import Retention, collect_garbage
from tiefvision_core.index.versions import open_index, use_version, versions
from tiefvision_core.storage.stores import Store

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
