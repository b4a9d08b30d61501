"""A real catalog under a real Prefect server: rejects (an empty photo, the catalog's CSV
files) never stop the nightly reindex or rebuild-index, and once a photo is removed from
the source, reindex + gc leave no object on storage that mentions it — while the live
index stays and a dry run deletes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import harness_api_url
from tiefvision_core.annotations.repository import AnnotationDatabase
from tiefvision_core.catalog.manifest import read_manifest
from tiefvision_core.catalog.synthetic import generate_catalog
from tiefvision_core.index.search import search_by_id
from tiefvision_core.storage.stores import LocalStore
from tiefvision_core.storage.urls import open_store
from tiefvision_core.vector_index.versions import open_index

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": harness_api_url(), "PREFECT_LOGGING_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "tiefvision_cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def mentions(root: Path, needles: set[str]) -> list[str]:
    """Files under ``root`` whose content names any needle: Parquet read cell by cell
    (its pages are compressed), everything else searched as bytes."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            text = json.dumps(pq.read_table(path).to_pylist(), default=str)
        else:
            text = path.read_bytes().decode("latin-1")
        if any(needle in text for needle in needles):
            found.append(path.relative_to(root).as_posix())
    return found


def test_rejects_never_stop_a_run_and_gc_forgets_a_removed_photo(tmp_path: Path) -> None:
    from flows.gc import gc
    from flows.reindex import reindex

    source = tmp_path / "catalog"  # images/ plus boxes.csv and products.csv: rejects
    generate_catalog(source, products=3, views=1, seed=7, size=(96, 120))
    (source / "images" / "broken.jpg").write_bytes(b"")
    root = tmp_path / "store"
    store_url = root.as_uri()
    store = open_store(store_url)
    run = {"images": str(source), "store": store_url, "shard_size": 2, "batch_size": 2}

    first = reindex(**run)
    assert first.rejected >= 3 and first.images == 3  # broken.jpg, boxes.csv, products.csv
    assert first.indexes[0].size == 3

    rebuilt = cli("rebuild-index", "--store", store_url, "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert json.loads(rebuilt.stdout.strip().splitlines()[-1])["size"] == 3

    rows = {r["rel_path"]: r for r in read_manifest(store).to_pylist()}
    gone = rows["images/p0001/view-1.jpg"]
    needles = {gone["image_id"], gone["sha256"]}
    # A hand-drawn box and a training snapshot of it: derived from the photo too.
    with AnnotationDatabase(f"sqlite:///{root / 'annotations.sqlite'}") as annotations:
        for path in ("images/p0001/view-1.jpg", "images/p0000/view-1.jpg"):
            annotations.set_box(path, (1, 1, 40, 40), manifest=read_manifest(store))
        annotations.export_snapshot(store, "boxes")
    (source / "images" / "p0001" / "view-1.jpg").unlink()

    second = reindex(**run)  # its gc step (retention 3) drops the photo's encodings at once
    assert second.removed == 1 and second.images == 2
    left = mentions(root, needles)
    shards = [key for key in left if key.startswith("encodings/") and "/shard-" in key]
    assert left and not shards, left  # (its work list stays for the grace period)
    assert "annotations.sqlite" in left  # retained manifests still list the photo
    assert any(key.startswith("indexes/") for key in left)  # retained versions still do
    live = open_index(store, "unsupervised")
    assert gone["image_id"] not in set(live.ids["image_id"])

    before = {p: p.stat().st_size for p in root.rglob("*") if p.is_file()}
    dry = cli("gc", "--store", store_url, "--retention", "1", "--grace-hours", "0",
              "--dry-run", "--json")  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-3000:]
    planned = json.loads(dry.stdout.strip().splitlines()[-1])
    assert planned["dry_run"] and planned["bytes"] > 0
    assert {p: p.stat().st_size for p in root.rglob("*") if p.is_file()} == before
    for item in planned["items"]:
        if item["action"] == "delete" and (root / item["key"]).is_file():
            assert item["bytes"] == before[root / item["key"]]
    listed = {(item["what"], item["key"]) for item in planned["items"]}
    assert ("annotations", f"annotations:boxes/{gone['image_id']}") in listed
    assert any(what == "snapshots" for what, _ in listed)

    done = gc(store=store_url, retention=1, grace_hours=0)
    assert not done.dry_run and done.bytes > 0
    assert mentions(root, needles) == []
    assert store.read_pointer("indexes/unsupervised/CURRENT") == live.version
    kept = open_index(store, "unsupervised")
    other = kept.ids["image_id"][0]
    assert search_by_id(kept, other, k=1, include_self=True).results[0].image_id == other
    assert isinstance(store, LocalStore)
    assert not list((root / "indexes").glob("*/*/.tmp-*"))


def test_gc_never_deletes_under_a_running_reindex(tmp_path: Path) -> None:
    """The store lock is held (a reindex running): gc waits, then gives up deleting
    nothing, naming the holder."""
    from flows.gc import gc
    from tiefvision_core.pipeline.reindex import LOCK_NAME
    from tiefvision_core.storage.lock import LockBusy, StoreLock

    store = LocalStore(tmp_path / "store")
    stale = store.root / "encodings" / "e" / "box" / "v" / "_plans" / "p.parquet"
    store.put_bytes(stale.relative_to(store.root).as_posix(), b"plan")
    with StoreLock(store, LOCK_NAME, label="reindex flow run test").hold(5):
        with pytest.raises(LockBusy, match="reindex flow run test"):
            gc(store=store.url, grace_hours=0, lock_timeout=1)
        assert stale.exists()
    done = gc(store=store.url, grace_hours=0, lock_timeout=1)
    assert not stale.exists() and done.totals["temporary"]["objects"] == 1
