"""Index maintenance: an updated index answers like a fresh build on the same rows, removed
rows never come back, new rows are found, and the update-or-rebuild decision gives reasons.
"""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import numpy as np
import pytest

from tests.core.index.test_index import recall, searchable
from tiefvision_core.index.updates import (
    IndexDelta,
    LiveIndex,
    UpdatePolicy,
    decide_update,
    diff_rows,
)
from tiefvision_core.similarity.unsupervised import similarity_vectors
from tiefvision_core.vector_index.vectors import IndexConfig, build_index, update_index

GRID = (3, 3, 32)  # D = 288
CONFIGS = {
    "exact": IndexConfig(kind="exact"),
    "hnsw": IndexConfig(kind="hnsw", compact_channels=16),
    "ivfpq": IndexConfig(kind="ivfpq", pq_bytes=16, compact_channels=16),
}


@pytest.fixture(autouse=True)
def _one_faiss_thread() -> Iterator[None]:
    """k-means and HNSW linking spin-wait badly on a busy small machine: one thread."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def clustered(n: int, seed: int, centres: np.ndarray) -> np.ndarray:
    """Rows around shared centres (data with structure, as catalog photos have)."""
    rng = np.random.default_rng(seed)
    h, w, c = GRID
    noise = rng.normal(size=(n, c, h, w)).astype(np.float32)
    return similarity_vectors(centres[rng.integers(0, len(centres), n)] + 1.5 * noise)


def brute_force(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    return np.argsort(-scores, axis=1)[:, :k]


@pytest.fixture(scope="module")
def catalog() -> dict[str, np.ndarray]:
    """A live index's 1,500 rows, then: 150 removed (scattered), 120 new rows appended —
    the next version's rows are the kept old rows (ascending) and then the new ones."""
    h, w, c = GRID
    centres = np.random.default_rng(0).normal(size=(60, c, h, w)).astype(np.float32)
    old = clustered(1500, seed=1, centres=centres)
    removed = np.sort(np.random.default_rng(2).choice(1500, 150, replace=False))
    kept = np.setdiff1d(np.arange(1500), removed)
    new = clustered(120, seed=3, centres=centres)
    queries = clustered(100, seed=4, centres=centres)
    return {
        "old": old,
        "removed": removed,
        "kept": kept,
        "new": new,
        "next": np.concatenate([old[kept], new]),
        "queries": queries,
    }


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivfpq"])
def test_update_answers_like_a_fresh_build_on_the_same_rows(kind: str, catalog) -> None:
    old, nxt, kept, queries = catalog["old"], catalog["next"], catalog["kept"], catalog["queries"]
    previous = searchable(build_index(old, GRID, CONFIGS[kind]), old)
    updated_built = update_index(previous, nxt, kept)
    assert updated_built.kind == kind
    assert updated_built.index.ntotal == len(nxt)
    updated = searchable(updated_built, nxt)
    fresh = searchable(build_index(nxt, GRID, CONFIGS[kind]), nxt)
    if kind != "exact":  # the update keeps the live version's training
        np.testing.assert_array_equal(updated.projection, previous.projection)

    truth = brute_force(queries, nxt, 10)
    _, got = updated.search(queries, 10)
    _, fresh_rows = fresh.search(queries, 10)
    if kind == "exact":
        np.testing.assert_array_equal(got, fresh_rows)
        np.testing.assert_array_equal(got, truth)
    else:
        # Scores come from the full vectors of the row ids the index returned: wrong ids
        # after the renumbering would show up here as a collapsed recall.
        assert recall(got, truth) >= recall(fresh_rows, truth) - 0.03
        assert recall(got, truth) >= 0.9

    # Every row, kept or new, finds itself first under its new row number.
    own = np.concatenate([np.arange(0, len(kept), 37), np.arange(len(kept), len(nxt))])
    _, first = updated.search(nxt[own], 1)
    np.testing.assert_array_equal(first[:, 0], own)

    # Removed rows never come back: no result row outside the new rows, and a removed
    # photo queried with its own vector finds only other photos (no score 1).
    gone = catalog["old"][catalog["removed"]]
    scores, rows = updated.search(gone, 10)
    assert ((rows >= 0) & (rows < len(nxt))).all()
    assert scores[:, 0].max() < 0.999


def test_ivfpq_update_keeps_the_trained_codes_and_drops_removed_ids(catalog) -> None:
    old, nxt, kept = catalog["old"], catalog["next"], catalog["kept"]
    previous = searchable(build_index(old, GRID, CONFIGS["ivfpq"]), old)
    updated = update_index(previous, nxt, kept).index
    before, after = faiss.extract_index_ivf(previous.index), faiss.extract_index_ivf(updated)
    assert after.nlist == before.nlist and after.nprobe == before.nprobe
    np.testing.assert_array_equal(  # the coarse centroids are the live version's
        faiss.downcast_index(before.quantizer).reconstruct_n(0, before.nlist),
        faiss.downcast_index(after.quantizer).reconstruct_n(0, after.nlist),
    )

    def ids_and_codes(index) -> dict[int, tuple[int, bytes]]:
        out = {}
        for number in range(index.nlist):
            size = index.invlists.list_size(number)
            if not size:
                continue
            ids = faiss.rev_swig_ptr(index.invlists.get_ids(number), size).copy()
            code_size = index.invlists.code_size
            codes = faiss.rev_swig_ptr(index.invlists.get_codes(number), size * code_size)
            for j, row in enumerate(ids):
                out[int(row)] = (number, bytes(codes[j * code_size : (j + 1) * code_size]))
        return out

    old_codes, new_codes = ids_and_codes(before), ids_and_codes(after)
    assert sorted(new_codes) == list(range(len(nxt)))  # every id once, none removed
    # A kept row keeps its list and its stored code under its new number.
    for new_row, old_row in enumerate(kept):
        assert new_codes[new_row] == old_codes[int(old_row)]


def test_update_refuses_unordered_kept_rows(catalog) -> None:
    old = catalog["old"]
    previous = searchable(build_index(old, GRID, CONFIGS["exact"]), old)
    with pytest.raises(ValueError, match="ascending"):
        update_index(previous, old[[2, 1]], np.array([2, 1]))


# -- row diff -------------------------------------------------------------------------------
BOX = (0, 0, 10, 10)


def test_diff_rows_counts_new_changed_removed_and_keeps_order() -> None:
    old = [("a", "h1", BOX), ("b", "h2", BOX), ("c", "h3", BOX), ("d", "h4", BOX)]
    current = [
        ("d", "h4", BOX),  # kept
        ("a", "h1", BOX),  # kept
        ("b", "h2-new", BOX),  # changed bytes
        ("e", "h5", BOX),  # new
        ("c", "h3", (1, 1, 9, 9)),  # changed box
    ]
    diff = diff_rows(old, current)
    np.testing.assert_array_equal(diff.kept_rows, [0, 3])
    assert diff.kept == [("a", "h1", BOX), ("d", "h4", BOX)]
    assert [key[0] for key in diff.added] == ["b", "c", "e"]
    assert (diff.delta.kept, diff.delta.new, diff.delta.changed, diff.delta.removed) == (
        2,
        1,
        2,
        0,
    )
    gone = diff_rows(old, current[1:])  # "d" removed from the catalog
    assert gone.delta.removed == 1 and gone.delta.kept == 1
    np.testing.assert_array_equal(gone.kept_rows, [0])
    assert gone.delta.size == 4 and gone.delta.touched == 4


# -- update or rebuild ----------------------------------------------------------------------
SOURCE = {"encoder_version": "enc-1", "model_version": None}


def live(kind: str, *, size: int = 1000, trained: int = 1000, churn: int = 0) -> LiveIndex:
    config = IndexConfig(kind="auto" if kind == "exact" else kind)
    return LiveIndex(
        version="v1",
        kind=kind,
        size=size,
        dimension=288,
        source=SOURCE,
        config=config,
        trained_rows=trained,
        churn=churn,
    )


def delta(kept: int, new: int = 0, changed: int = 0, removed: int = 0) -> IndexDelta:
    return IndexDelta(kept=kept, new=new, changed=changed, removed=removed)


def test_first_build_and_a_new_vector_space_rebuild_from_encodings() -> None:
    first = decide_update(None, delta(0, new=10), SOURCE, IndexConfig())
    assert (first.action, first.reuse_vectors) == ("rebuild", False)
    assert "first build" in first.reason
    index = live("exact")
    encoder = decide_update(
        index, delta(1000), {**SOURCE, "encoder_version": "enc-2"}, index.config
    )
    assert (encoder.action, encoder.reuse_vectors) == ("rebuild", False)
    assert "encoder changed (enc-1 → enc-2)" in encoder.reason
    model = decide_update(index, delta(1000), {**SOURCE, "model_version": "m2"}, index.config)
    assert (model.action, model.reuse_vectors) == ("rebuild", False)
    assert "similarity model changed" in model.reason


def test_nothing_touched_leaves_the_live_version() -> None:
    for kind in ("exact", "hnsw", "ivfpq"):
        index = live(kind)
        decision = decide_update(index, delta(1000), SOURCE, index.config)
        assert decision.action == "unchanged", kind
    moved = IndexDelta(1000, 0, 0, 0, metadata_changed=True)
    index = live("exact")
    assert decide_update(index, moved, SOURCE, index.config).action == "update"


def test_exact_indexes_always_update_however_large_the_change() -> None:
    index = live("exact")
    decision = decide_update(index, delta(100, new=5000, removed=900), SOURCE, index.config)
    assert (decision.action, decision.reuse_vectors) == ("update", True)


def test_config_or_auto_kind_change_rebuilds_with_reused_vectors() -> None:
    index = live("hnsw")
    other = IndexConfig(kind="ivfpq")
    decision = decide_update(index, delta(1000, new=1), SOURCE, other)
    assert (decision.action, decision.reuse_vectors) == ("rebuild", True)
    assert decision.reason == "index configuration changed"
    # auto: grown beyond the exact budget (1000 rows × 288 × 4 B fits, 2000 does not).
    budget = IndexConfig(exact_max_bytes=1500 * 288 * 4)
    small = LiveIndex("v1", "exact", 1000, 288, SOURCE, budget, 1000, 0)
    grown = decide_update(small, delta(1000, new=1000), SOURCE, budget)
    assert grown.action == "rebuild" and "now picks hnsw, not exact" in grown.reason


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_ann_churn_and_growth_over_the_limits_rebuild_with_the_reason(kind: str) -> None:
    policy = UpdatePolicy(max_churn=0.2, max_growth=2.0)
    index = live(kind)
    small = decide_update(index, delta(990, new=10, changed=5, removed=10), SOURCE,
                          index.config, policy)  # fmt: skip
    assert small.action == "update" and "training reused" in small.reason

    churned = decide_update(index, delta(850, new=100, changed=60, removed=150), SOURCE,
                            index.config, policy)  # fmt: skip
    assert (churned.action, churned.reuse_vectors) == ("rebuild", True)
    assert "31% of the 1000 rows" in churned.reason and "limit 20%" in churned.reason

    # Churn accumulates over updates: 15% earlier + 10% now crosses 20%.
    earlier = live(kind, churn=150)
    cumulative = decide_update(earlier, delta(950, new=50, removed=50), SOURCE, earlier.config,
                               policy)  # fmt: skip
    assert cumulative.action == "rebuild" and "25%" in cumulative.reason

    # Growth is judged before churn: 2.5× the trained rows (and a shrink below 1/2).
    grown = decide_update(index, delta(1000, new=1500), SOURCE, index.config,
                          UpdatePolicy(max_churn=10, max_growth=2.0))  # fmt: skip
    assert grown.action == "rebuild" and "2.50× the 1000 rows" in grown.reason
    shrunk = decide_update(index, delta(400, removed=600), SOURCE, index.config,
                           UpdatePolicy(max_churn=10, max_growth=2.0))  # fmt: skip
    assert shrunk.action == "rebuild" and "0.40×" in shrunk.reason


def test_policy_rejects_limits_that_would_never_or_always_rebuild() -> None:
    with pytest.raises(ValueError):
        UpdatePolicy(max_churn=0)
    with pytest.raises(ValueError):
        UpdatePolicy(max_growth=1.0)


def test_live_index_from_metadata_of_a_fresh_build_and_of_an_update() -> None:
    base = {"kind": "hnsw", "size": 800, "dimension": 288, "config": {"kind": "hnsw"}}
    fresh = LiveIndex.from_metadata("v1", base)
    assert (fresh.trained_rows, fresh.churn) == (800, 0)
    updated = LiveIndex.from_metadata("v2", {**base, "training": {"rows": 700, "churn": 120}})
    assert (updated.trained_rows, updated.churn) == (700, 120)
    assert updated.config == IndexConfig(kind="hnsw")
