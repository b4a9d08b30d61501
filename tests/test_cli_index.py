"""``tiefvision index list|use``: versions as scripts read them, a rollback that moves
CURRENT, and one-line refusals for versions that cannot be made live."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.cli import one_line_error, run_cli
from tests.core.index.test_index import PREFIX, publish, random_vectors
from tests.core.index.test_search_live import all_ids, publish_catalog, publish_photos
from tiefvision_core.storage.stores import LocalStore


def test_list_use_and_refusals(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    url = store.url
    first = publish(store, random_vectors(30, seed=1))
    second = publish(store, random_vectors(20, seed=2))

    listed = run_cli("index", "list", "--store", url, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["version"], r["rows"], r["live"]) for r in rows] == [
        (first.version, 30, False),
        (second.version, 20, True),
    ]
    assert all(r["bytes"] > 0 and r["self_check"]["queries"] > 0 for r in rows)
    table = run_cli("index", "list", "--store", url, "--space", "unsupervised")
    assert first.version in table.stdout and second.version in table.stdout

    used = run_cli("index", "use", first.version, "--store", url, "--json")
    assert used.returncode == 0, used.stderr
    assert json.loads(used.stdout)["before"] == second.version
    assert store.read_pointer(PREFIX + "CURRENT") == first.version

    line = one_line_error(run_cli("index", "use", "20200101T000000000000Z-exact", "--store", url))
    assert "does not exist" in line and "tiefvision index list" in line
    other = tmp_path / "other.npy"
    np.save(other, random_vectors(20, seed=9).astype(np.float16))
    store.put_bytes(f"{PREFIX}{second.version}/vectors.npy", other.read_bytes())
    line = one_line_error(run_cli("index", "use", second.version, "--store", url))
    assert "fails its self-check" in line
    assert store.read_pointer(PREFIX + "CURRENT") == first.version
    line = one_line_error(run_cli("index", "list", "--store", url, "--space", "nope"))
    assert "unknown space" in line


def test_a_rollback_never_brings_removed_photos_back(tmp_path: Path) -> None:
    """`index use` back to a version built before photos were removed: search answers
    from it, but never with those photos, and a query by one is refused."""
    store = LocalStore(tmp_path / "store")
    photos = all_ids(30)
    removed = frozenset(photos[3:30:4])
    publish_catalog(store, photos)
    older = publish_photos(store, photos)
    publish_catalog(store, photos, removed=removed)
    publish_photos(store, [p for p in photos if p not in removed], seed=1)

    used = run_cli("index", "use", older, "--store", store.url, "--json")
    assert used.returncode == 0, used.stderr
    found = run_cli("search", "--id", photos[0], "-k", "30", "--store", store.url, "--json")
    assert found.returncode == 0, found.stderr
    answer = json.loads(found.stdout)
    assert answer["index_version"] == older
    hits = {hit["image_id"] for hit in answer["results"]}
    assert hits == set(photos) - removed - {photos[0]}  # every live photo, no removed one
    line = one_line_error(run_cli("search", "--id", photos[3], "--store", store.url))
    assert f"image id '{photos[3]}' is not in the catalog any more" in line
