"""Search answers from the live catalog, whichever index version is live: a photo the
manifest removed (or re-shot: other bytes) is never a hit nor a query, k hits still come
back, and scores stay within [-1, 1]."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from tests.core.index.test_index import GRID, random_vectors
from tiefvision_core.catalog.live import LiveCatalog, read_live_catalog
from tiefvision_core.catalog.manifest import MANIFEST_COLUMNS, publish_manifest
from tiefvision_core.errors import InputError
from tiefvision_core.index.search import search_by_id, similarity
from tiefvision_core.storage.stores import LocalStore, Store
from tiefvision_core.vector_index.publish import publish_index
from tiefvision_core.vector_index.versions import OpenedIndex, open_index

PHOTOS = 40
REMOVED = frozenset(f"img-{i:04d}" for i in (1, 5, 6, 7, 12, 20, 21, 33))
RESHOT = frozenset(f"img-{i:04d}" for i in (2, 30))


def sha(image_id: str, shot: int = 0) -> str:
    return hashlib.sha256(f"{image_id}/{shot}".encode()).hexdigest()


def index_ids(image_ids: list[str]) -> pd.DataFrame:
    """An id map as a build writes it: image_id, the bytes' sha256, the box, a category."""
    return pd.DataFrame(
        {
            "image_id": image_ids,
            "sha256": [sha(i) for i in image_ids],
            "box": [[0, 0, 64, 64]] * len(image_ids),
            "category": ["shoe" if n % 3 else "bag" for n in range(len(image_ids))],
        }
    )


def publish_photos(store: Store, image_ids: list[str], seed: int = 0) -> str:
    """An unsupervised index version over ``image_ids`` (their first shot); its version."""
    return publish_index(
        store,
        "unsupervised",
        random_vectors(len(image_ids), seed=seed),
        index_ids(image_ids),
        grid=GRID,
        source={"encoder_version": "x"},
    ).version


def publish_catalog(
    store: Store,
    image_ids: list[str],
    *,
    removed: frozenset[str] = frozenset(),
    reshot: frozenset[str] = frozenset(),
) -> str:
    """A manifest version as ingest writes it: ``removed`` photos kept with status
    ``removed``, ``reshot`` ones with other bytes; its version."""
    rows = [
        {
            **dict.fromkeys(MANIFEST_COLUMNS),
            "image_id": image_id,
            "rel_path": f"{image_id}.jpg",
            "source_uri": f"file:///photos/{image_id}.jpg",
            "sha256": sha(image_id, int(image_id in reshot)),
            "bytes": 1000,
            "width": 64,
            "height": 64,
            "status": "removed" if image_id in removed else "ok",
            "change": "removed" if image_id in removed else "unchanged",
            "ingested_at": datetime.now(UTC),
        }
        for image_id in image_ids
    ]
    return publish_manifest(store, pd.DataFrame(rows)).version


def all_ids(n: int = PHOTOS) -> list[str]:
    return [f"img-{i:04d}" for i in range(n)]


@pytest.fixture
def stale(tmp_path) -> tuple[OpenedIndex, LiveCatalog]:
    """An index built before the catalog removed and re-shot some of its photos (a reindex
    whose new version the gate refused), and the live catalog."""
    store = LocalStore(tmp_path / "store")
    publish_photos(store, all_ids())
    publish_catalog(store, all_ids(), removed=REMOVED, reshot=RESHOT)
    live = read_live_catalog(store)
    assert live is not None
    return open_index(store, "unsupervised"), live


def exact_top(opened: OpenedIndex, query: str, allowed: set[str], k: int) -> list[str]:
    """The k best of ``allowed`` by brute force over the stored vectors."""
    vectors = np.asarray(opened.index.vectors, np.float64)
    scores = vectors @ vectors[opened.row_of(query)]
    ranked = [opened.ids["image_id"][row] for row in np.argsort(-scores, kind="stable")]
    return [image_id for image_id in ranked if image_id in allowed and image_id != query][:k]


def test_removed_and_reshot_photos_are_never_hits_and_k_hits_still_come_back(stale) -> None:
    opened, live = stale
    gone = REMOVED | RESHOT
    allowed = set(all_ids()) - gone
    unfiltered = 0
    for query in sorted(allowed):
        before = search_by_id(opened, query, k=10)  # the index as it is: what was answered
        unfiltered += sum(hit.image_id in gone for hit in before.results)
        result = search_by_id(opened, query, k=10, live=live)
        found = [hit.image_id for hit in result.results]
        assert not set(found) & gone, (query, found)
        assert found == exact_top(opened, query, allowed, 10)
    assert unfiltered > 0  # the stale index does rank removed photos among the best


def test_the_filter_and_the_catalog_combine(stale) -> None:
    opened, live = stale
    categories = zip(opened.column("image_id"), opened.column("category"), strict=True)
    allowed = {i for i, category in categories if category == "bag"} - REMOVED - RESHOT
    result = search_by_id(opened, "img-0000", k=5, where={"category": "bag"}, live=live)
    assert [hit.image_id for hit in result.results] == exact_top(opened, "img-0000", allowed, 5)


def test_a_query_by_a_removed_or_reshot_photo_is_an_input_error(stale) -> None:
    opened, live = stale
    with pytest.raises(InputError, match="is not in the catalog any more"):
        search_by_id(opened, "img-0005", live=live)
    with pytest.raises(InputError, match="changed since the unsupervised index"):
        search_by_id(opened, "img-0030", live=live)
    with pytest.raises(InputError, match="is not in the unsupervised index"):
        search_by_id(opened, "no-such-photo", live=live)


def test_rows_outside_are_worked_out_once_per_catalog_version(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    publish_photos(store, all_ids())
    opened = open_index(store, "unsupervised")
    publish_catalog(store, all_ids(), removed=REMOVED)
    first = read_live_catalog(store)
    assert first is not None
    rows = opened.rows_outside(first)
    assert {opened.ids["image_id"][r] for r in rows} == REMOVED
    assert opened.rows_outside(first) is rows  # cached: a set lookup per hit from now on
    publish_catalog(store, all_ids(), removed=REMOVED | {"img-0000"})
    second = read_live_catalog(store)
    assert second is not None and second.version != first.version
    assert {opened.ids["image_id"][r] for r in opened.rows_outside(second)} == REMOVED | {
        "img-0000"
    }


def test_scores_are_clamped_into_minus_one_one(tmp_path) -> None:
    """float16 storage rounds a unit vector's own inner product a hair above 1."""
    store = LocalStore(tmp_path / "store")
    publish_photos(store, all_ids(200), seed=4)
    opened = open_index(store, "unsupervised")
    vectors = np.asarray(opened.index.vectors, np.float32)
    raw, rows = opened.index.search(vectors, 1)
    over = [int(r) for r, s in zip(rows[:, 0], raw[:, 0], strict=True) if s > 1.0]
    assert over, "no vector scores above 1 with itself: the data no longer shows the case"
    query = opened.ids["image_id"][over[0]]
    result = search_by_id(opened, query, k=3, include_self=True)
    assert result.results[0].image_id == query and result.results[0].score == 1.0
    assert similarity(1.000026) == 1.0 and similarity(-1.00003) == -1.0
    assert similarity(0.1234567) == 0.123457
