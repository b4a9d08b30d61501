"""The nightly reindex under a real Prefect server: a first run builds everything, a second
one after photos were added, changed and removed touches exactly those, a third one with no
change publishes nothing; and a run killed during its encode stage is finished by the next
(stale lock taken over, no duplicate rows, a complete index)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from prefect.client.orchestration import get_client
from prefect.states import StateType

from tests.conftest import harness_api_url
from tiefvision_core.annotations.repository import AnnotationDatabase
from tiefvision_core.catalog.boxes import read_boxes
from tiefvision_core.catalog.manifest import image_id_for, read_manifest
from tiefvision_core.catalog.synthetic import generate_catalog
from tiefvision_core.encoding.shards import read_encodings
from tiefvision_core.errors import InputError
from tiefvision_core.index.search import search_by_id
from tiefvision_core.storage.lock import LockHolder
from tiefvision_core.storage.stores import Store
from tiefvision_core.storage.urls import open_store
from tiefvision_core.vector_index.versions import open_index

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

KEY = ("image_id", "sha256", "box", "flipped")


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The catalog (5 products × 2 views) and another one to draw new and changed photos
    from (other seed: other bytes)."""
    root = tmp_path_factory.mktemp("reindex-catalogs")
    generate_catalog(root / "main", products=5, views=2, seed=11)
    generate_catalog(root / "other", products=2, views=2, seed=12)
    return root / "main" / "images", root / "other" / "images"


def box_rows(store: Store) -> tuple[dict[str, Counter], list[str]]:
    """Rows of every box-crop encoding shard, per shard key, counted by their key columns."""
    shards: dict[str, Counter] = {}
    for info in store.list("encodings/"):
        if "/box/" in info.key and info.key.rsplit("/", 1)[-1].startswith("shard-"):
            table = store.read_parquet(info.key, ["image_id", "sha256", "box", "flipped"])
            shards[info.key] = Counter(
                (r["image_id"], r["sha256"], tuple(r["box"]), r["flipped"])
                for r in table.to_pylist()
            )
    return shards, sorted(shards)


def current_ids(store: Store) -> dict[str, str]:
    """rel_path → (image_id, sha256) of usable photos in the current manifest."""
    manifest = read_manifest(store).to_pylist()
    return {r["rel_path"]: (r["image_id"], r["sha256"]) for r in manifest if r["status"] == "ok"}


def all_results(opened) -> set[str]:
    """Every id any indexed photo's search returns (k = the whole index)."""
    found: set[str] = set()
    for image_id in opened.ids["image_id"]:
        result = search_by_id(opened, image_id, k=len(opened.ids), include_self=True)
        found |= {hit.image_id for hit in result.results}
    return found


def test_second_run_indexes_exactly_the_changes(catalogs, tmp_path: Path) -> None:
    from flows.reindex import reindex

    main, other = catalogs
    images = tmp_path / "images"
    shutil.copytree(main, images)
    store_url = (tmp_path / "store").as_uri()
    store = open_store(store_url)
    run = {"images": str(images), "store": store_url, "shard_size": 4, "batch_size": 4}

    first = reindex(**run)
    assert (first.new, first.changed, first.removed, first.images, first.encoded) == (
        10,
        0,
        0,
        10,
        10,
    )
    [built] = first.indexes
    assert (built.action, built.before, built.size) == ("rebuild", None, 10)
    assert "first build" in built.reason
    assert set(first.stages) == {"ingest", "encode", "index unsupervised", "gc"}  # no locator
    before_ids = current_ids(store)
    shards_before, keys_before = box_rows(store)
    rows_before = sum(shards_before.values(), Counter())
    assert len(rows_before) == 10 and set(rows_before.values()) == {1}  # a photo, no mirror

    # Between the runs: a new product (2 photos), 2 photos re-shot (new bytes), one product
    # gone. The first re-shot photo gets the bytes of a new photo: after re-encoding, the
    # two must find each other with similarity 1.
    shutil.copytree(other / "p0000", images / "pnew")
    (images / "p0001" / "view-1.jpg").write_bytes((other / "p0000" / "view-1.jpg").read_bytes())
    (images / "p0001" / "view-2.jpg").write_bytes((other / "p0001" / "view-1.jpg").read_bytes())
    shutil.rmtree(images / "p0002")

    second = reindex(**run)
    assert (second.new, second.changed, second.removed, second.rejected) == (2, 2, 2, 0)
    assert second.images == 10 and second.encoded == 4  # new + changed photos, only
    [update] = second.indexes
    assert (update.action, update.before, update.after != update.before) == (
        "update",
        built.after,
        True,
    )
    assert (update.kept, update.new, update.changed, update.removed) == (6, 2, 2, 2)
    assert update.vectors_computed == 4 and update.size == 10

    after_ids = current_ids(store)
    new_ids = {after_ids[f"pnew/view-{v}.jpg"][0] for v in (1, 2)}
    changed = {after_ids[f"p0001/view-{v}.jpg"] for v in (1, 2)}
    removed = {before_ids[f"p0002/view-{v}.jpg"][0] for v in (1, 2)}
    assert {i for i, _ in changed} == {before_ids[f"p0001/view-{v}.jpg"][0] for v in (1, 2)}
    assert all(
        after_ids[p][1] != before_ids[p][1] for p in ("p0001/view-1.jpg", "p0001/view-2.jpg")
    )

    # Encodings: the first run's shards untouched unless they held a removed or re-shot
    # photo's rows (the closing gc step rewrote or dropped those rows, nothing else), the
    # new rows are exactly the new and changed photos (no mirror: an index never reads
    # one), none for an unchanged photo.
    shards_after, keys_after = box_rows(store)
    dead = {before_ids[f"{p}/view-{v}.jpg"] for p in ("p0001", "p0002") for v in (1, 2)}
    untouched = [k for k in keys_before if not any(r[:2] in dead for r in shards_before[k])]
    assert untouched and all(shards_after.get(k) == shards_before[k] for k in untouched)
    rows_after = sum(shards_after.values(), Counter())
    kept = Counter({row: n for row, n in rows_before.items() if row[:2] not in dead})
    assert not kept - rows_after and not {r[:2] for r in rows_after} & dead
    added = rows_after - kept
    assert set(rows_after.values()) == {1} and len(added) == 4
    assert {(i, s) for i, s, _, _ in added} == {
        after_ids[f"pnew/view-{v}.jpg"] for v in (1, 2)
    } | changed
    assert Counter(flipped for *_, flipped in added) == {False: 4}

    # Search: new photos found, removed ones never returned, changed ones re-encoded.
    opened = open_index(store, "unsupervised")
    assert opened.version == update.after
    indexed = dict(zip(opened.ids["image_id"], opened.ids["sha256"], strict=True))
    assert set(indexed) == {i for i, _ in after_ids.values()}
    assert all(indexed[i] == s for i, s in changed)
    for image_id in new_ids:  # top 2: one new photo has a twin with the same bytes
        hits = search_by_id(opened, image_id, k=2, include_self=True).results
        assert image_id in {hit.image_id for hit in hits} and hits[0].score > 0.99
    returned = all_results(opened)
    assert new_ids <= returned and not (removed & returned)
    for image_id in removed:
        with pytest.raises(InputError, match="not in the unsupervised index"):
            search_by_id(opened, image_id)
    reshot = after_ids["p0001/view-1.jpg"][0]
    twin = after_ids["pnew/view-1.jpg"][0]
    top = search_by_id(opened, reshot, k=1).results[0]
    assert top.image_id == twin and top.score > 0.99

    # Nothing changed since: the CLI run leaves the live version alone and encodes nothing.
    env = {**os.environ, "PREFECT_API_URL": harness_api_url(), "PREFECT_LOGGING_LEVEL": "WARNING"}
    third = subprocess.run(
        [sys.executable, "-m", "tiefvision_cli.main", "reindex", "--images", str(images),
         "--store", store_url, "--batch-size", "4"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert third.returncode == 0, third.stderr[-3000:]
    assert "new 0, changed 0, removed 0, rejected 0" in third.stdout, third.stdout
    assert "0 encoded" in third.stdout
    assert f"unsupervised index: {update.after} → {update.after} (unchanged:" in third.stdout
    assert store.read_pointer("indexes/unsupervised/CURRENT") == update.after
    assert box_rows(store)[1] == keys_after


def _reindex_cli(images: Path, store_url: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": harness_api_url(), "PREFECT_LOGGING_LEVEL": "WARNING"}
    command = ["reindex", "--images", str(images), "--store", store_url, "--shard-size", "2",
               "--batch-size", "1", "--lock-ttl", "5", "--json", *extra]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "tiefvision_cli.main", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill takes its workers too
    )


def test_killed_run_is_finished_by_the_next_without_duplicates(catalogs, tmp_path: Path) -> None:
    main, _ = catalogs
    store_url = (tmp_path / "store").as_uri()
    store = open_store(store_url)
    shards = tmp_path / "store" / "encodings"

    run = _reindex_cli(main, store_url)
    deadline = time.monotonic() + 600
    while not list(shards.rglob("box/*/shard-*.parquet")):
        assert run.poll() is None, run.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline, "no encoding shard written in time"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    written = box_rows(store)[0]
    assert 1 <= len(written) < 5, "the kill came too late to test resuming"
    assert not list(shards.rglob(".tmp-*")), "a killed run must leave no partial file"
    assert store.exists("locks/reindex.json"), "the killed run's lock is left behind"
    killed = LockHolder.from_bytes(store.get_bytes("locks/reindex.json")).flow_run_id
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(killed).state.type == StateType.RUNNING  # as Prefect saw it
    assert store.read_pointer("indexes/unsupervised/CURRENT") is None
    done_before = {key[0] for rows in written.values() for key in rows}

    rerun = _reindex_cli(main, store_url)
    out, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, err.decode()[-3000:]
    summary = json.loads(out)
    assert summary["lock_waited_s"] < 5  # the dead holder's lock is broken, not waited out
    assert not store.exists("locks/reindex.json")
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(killed).state.type == StateType.CRASHED  # marked by the rerun
    assert summary["new"] == 0 and summary["images"] == 10  # ingested before the kill
    assert summary["encoded"] == 10 - len(done_before)  # finished shards are reused

    rows = sum(box_rows(store)[0].values(), Counter())
    assert set(rows.values()) == {1}, "duplicate (image_id, sha256, box, flipped) rows"
    manifest = current_ids(store)
    assert {(i, s) for i, s, _, _ in rows} == set(manifest.values())
    assert len(rows) == len(manifest)  # every photo once (no mirror)

    [index] = summary["indexes"]
    assert (index["action"], index["size"]) == ("rebuild", 10)
    opened = open_index(store, "unsupervised")
    assert opened.version == index["after"] and len(opened.ids) == 10
    assert sorted(opened.ids["image_id"]) == sorted(i for i, _ in manifest.values())
    vectors = np.asarray(opened.index.vectors, np.float32)
    _, found = opened.index.search(vectors, 1)
    np.testing.assert_array_equal(found[:, 0], np.arange(10))


def _random_locator(store: Store, encoder) -> str:
    """A live locator for ``encoder`` with untrained heads: the reindex locates with it
    (what box it finds does not matter here, only whether it locates at all)."""
    from tiefvision_core.locator.crops import window_geometry
    from tiefvision_core.locator.model import LocatorHeads, TargetScaler
    from tiefvision_core.locator.model_files import save_locator

    torch.manual_seed(0)
    geometry = window_geometry(encoder)
    return save_locator(
        store,
        LocatorHeads(encoder.channels, geometry.kernel).eval(),
        TargetScaler((0.0,) * 4, (1.0,) * 4),
        geometry=geometry,
        scales=(320,),
        threshold=0.8,
        metadata={"encoder_version": encoder.version},
    ).version


def test_a_renamed_photo_keeps_its_box_and_is_neither_located_nor_encoded_again(
    tmp_path: Path, lite0
) -> None:
    """Same bytes under a new name: the hand-drawn box follows them to the new id, and the
    located box and box-crop encodings of those bytes are reused, not computed again."""
    from flows.reindex import reindex

    generate_catalog(tmp_path / "catalog", products=3, views=1, seed=5, size=(160, 200))
    images = tmp_path / "catalog" / "images"
    store_url = (tmp_path / "store").as_uri()
    store = open_store(store_url)
    locator = _random_locator(store, lite0)
    run = {"images": str(images), "store": store_url, "shard_size": 2, "batch_size": 2}
    first = reindex(**run)
    assert (first.images, first.located, first.encoded) == (3, 3, 3)

    old = image_id_for("p0000/view-1.jpg")
    database = f"sqlite:///{tmp_path / 'store' / 'annotations.sqlite'}"
    with AnnotationDatabase(database) as annotations:
        annotations.set_box(old, (10, 20, 150, 190), manifest=read_manifest(store))
    (images / "p0000" / "view-1.jpg").rename(images / "p0000" / "front.jpg")

    second = reindex(**run)
    new = image_id_for("p0000/front.jpg")
    assert (second.new, second.removed, second.images) == (1, 1, 3)
    assert (second.located, second.encoded) == (0, 0)  # the bytes were done already
    with AnnotationDatabase(database) as annotations:
        assert annotations.get_box(old) is None
        assert annotations.get_box(new).box == (10, 20, 150, 190)
    located = read_boxes(store, locator)
    assert new in set(located["image_id"]) and old not in set(located["image_id"])
    rows = read_encodings(store, lite0.name, lite0.version, kind="box")
    assert Counter(rows["image_id"].to_pylist())[new] == 1  # the copied row (no mirror)
    opened = open_index(store, "unsupervised")
    assert new in set(opened.ids["image_id"]) and old not in set(opened.ids["image_id"])
