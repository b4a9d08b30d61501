"""Vector indexes: exact search, ANN with exact re-ranking, versioned publishing on storage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest

from tiefvision_core.errors import InputError
from tiefvision_core.similarity.unsupervised import similarity_vectors
from tiefvision_core.storage.stores import LocalStore, Store
from tiefvision_core.vector_index.publish import SelfCheckFailed, publish_index
from tiefvision_core.vector_index.vectors import (
    BuiltIndex,
    IndexConfig,
    VectorIndex,
    build_index,
    fit_projection,
)
from tiefvision_core.vector_index.versions import open_index, versions

GRID = (3, 3, 32)  # (H, W, C): D = 288
PREFIX = "indexes/unsupervised/"


def random_vectors(n: int, seed: int, grid: tuple[int, int, int] = GRID) -> np.ndarray:
    h, w, c = grid
    maps = np.random.default_rng(seed).normal(size=(n, c, h, w)).astype(np.float32)
    return similarity_vectors(maps)


def clustered(n: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Index rows and held-out queries around 100 shared centres (data with structure)."""
    h, w, c = GRID
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(100, c, h, w)).astype(np.float32)

    def draw(count: int) -> np.ndarray:
        noise = rng.normal(size=(count, c, h, w)).astype(np.float32)
        return similarity_vectors(centres[rng.integers(0, 100, count)] + 1.5 * noise)

    return draw(n), draw(queries)


def opened(vectors: np.ndarray, config: IndexConfig | None = None) -> VectorIndex:
    return searchable(build_index(vectors, GRID, config), vectors)


def searchable(built: BuiltIndex, vectors: np.ndarray) -> VectorIndex:
    """A built index over in-memory vectors, searchable without a round trip to storage."""
    return VectorIndex(
        kind=built.kind,
        index=built.index,
        vectors=vectors,
        grid=GRID,
        projection=built.projection,
        config=built.config,
    )


def brute_force(queries: np.ndarray, vectors: np.ndarray, k: int):
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    rows = np.argsort(-scores, axis=1)[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth, strict=True)]))


def assert_scores_are_exact(index: VectorIndex, queries, scores, rows) -> None:
    assert (rows >= 0).all()
    exact = np.einsum("qkd,qd->qk", np.asarray(index.vectors, np.float64)[rows], queries)
    np.testing.assert_allclose(scores, exact, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


# -- exact ----------------------------------------------------------------------------------
def test_small_data_is_searched_exactly_and_equals_brute_force() -> None:
    vectors = random_vectors(500, seed=1)
    assert vectors.shape == (500, 288)
    index = opened(vectors)
    assert index.kind == "exact"
    assert len(index) == 500
    queries = np.concatenate([random_vectors(20, seed=2), vectors[[0, 17, 499]]])
    scores, rows = index.search(queries, 10)
    want_scores, want_rows = brute_force(queries, vectors, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    # Own rows come back first with similarity 1.
    np.testing.assert_array_equal(rows[-3:, 0], [0, 17, 499])
    np.testing.assert_allclose(scores[-3:, 0], 1.0, atol=1e-5)


def test_auto_switches_to_hnsw_beyond_the_exact_budget() -> None:
    vectors = random_vectors(200, seed=3)
    assert IndexConfig().choose(200, 288) == "exact"
    assert IndexConfig(exact_max_bytes=200 * 288 * 4).choose(200, 288) == "exact"
    assert IndexConfig(exact_max_bytes=200 * 288 * 4 - 1).choose(200, 288) == "hnsw"
    assert IndexConfig(kind="ivfpq").choose(10, 288) == "ivfpq"
    built = build_index(vectors, GRID, IndexConfig(exact_max_bytes=1000, compact_channels=8))
    assert built.kind == "hnsw"
    assert built.projection.shape == (32, 8)
    assert built.index.d == 3 * 3 * 8


def test_k_beyond_the_size_is_clipped() -> None:
    vectors = random_vectors(4, seed=4)
    scores, rows = opened(vectors).search(vectors[:1], 10)
    assert rows.shape == scores.shape == (1, 4)
    assert sorted(rows[0]) == [0, 1, 2, 3]


# -- ANN with re-ranking --------------------------------------------------------------------
@pytest.fixture
def _one_faiss_thread() -> Iterator[None]:
    """k-means training with OpenMP spin-waits badly on a busy small machine: one thread."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


@pytest.fixture(scope="module")
def clustered_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vectors, queries = clustered(3000, 200, seed=1)
    _, truth = brute_force(queries, vectors, 10)
    return vectors, queries, truth


@pytest.mark.usefixtures("_one_faiss_thread")
def test_hnsw_recall_and_exact_scores(clustered_data) -> None:
    vectors, queries, truth = clustered_data
    index = opened(vectors, IndexConfig(kind="hnsw", compact_channels=16))
    assert index.kind == "hnsw"
    assert index.projection.shape == (32, 16)
    assert index.index.d == 9 * 16
    scores, rows = index.search(queries, 10)
    assert recall(rows, truth) >= 0.95  # measured 0.998
    assert_scores_are_exact(index, queries, scores, rows)
    # Re-ranking is what buys the recall: the 16-channel compact search alone is far worse
    # (measured 0.64).
    _, shallow = index.search(queries, 10, candidates=10)
    assert recall(shallow, truth) < 0.9
    # Own vectors come back first.
    own = np.arange(0, 3000, 97)
    _, found = index.search(vectors[own], 1)
    np.testing.assert_array_equal(found[:, 0], own)


@pytest.mark.usefixtures("_one_faiss_thread")
def test_search_by_id_keeps_the_re_ranked_recall(clustered_data) -> None:
    """The catalog search (k results, the query left out) asks the ANN index for its
    re-ranking pool, not just k + 1 candidates (which had recall ~0.64 here)."""
    from tiefvision_core.index.search import search_by_id
    from tiefvision_core.vector_index.versions import OpenedIndex

    vectors, _, _ = clustered_data
    index = opened(vectors, IndexConfig(kind="hnsw", compact_channels=16))
    ids = pd.DataFrame({"image_id": [f"img-{i}" for i in range(len(vectors))]})
    ids["box"] = [[0, 0, 1, 1]] * len(vectors)
    searched = OpenedIndex("unsupervised", "v1", index, ids, {})
    queries = np.arange(0, 3000, 15)
    _, truth = brute_force(vectors[queries], vectors, 11)  # own row first, then 10
    found = [
        [int(hit.image_id.split("-")[1]) for hit in search_by_id(searched, f"img-{q}").results]
        for q in queries
    ]
    for query, rows in zip(queries, found, strict=True):
        assert len(rows) == 10 and int(query) not in rows
    assert recall(np.array(found), truth[:, 1:]) >= 0.95


@pytest.mark.usefixtures("_one_faiss_thread")
def test_ivfpq_recall_and_exact_scores(clustered_data) -> None:
    vectors, queries, truth = clustered_data
    config = IndexConfig(kind="ivfpq", pq_bytes=16, compact_channels=16)
    index = opened(vectors, config)
    assert index.kind == "ivfpq"
    assert index.index.nlist == 3000 // 39  # ~4·sqrt(N) capped at N/39
    assert index.index.nprobe == 32
    scores, rows = index.search(queries, 10)
    assert recall(rows, truth) >= 0.9  # measured 0.98-0.99 over seeds
    assert_scores_are_exact(index, queries, scores, rows)


# -- projection -----------------------------------------------------------------------------
def compact(vectors: np.ndarray, projection: np.ndarray) -> np.ndarray:
    h, w, c = GRID
    return (vectors.reshape(len(vectors), h * w, c) @ projection).reshape(len(vectors), -1)


def test_projection_has_orthonormal_columns() -> None:
    vectors = random_vectors(300, seed=5)
    for channels in (8, 16):
        projection = fit_projection(vectors, GRID, channels)
        assert projection.shape == (32, channels)
        assert projection.dtype == np.float32
        np.testing.assert_allclose(projection.T @ projection, np.eye(channels), atol=1e-5)
    assert fit_projection(vectors, GRID, 64).shape == (32, 32)  # never more than C


def test_full_projection_preserves_inner_products_exactly() -> None:
    vectors = random_vectors(100, seed=6)
    projection = fit_projection(vectors, GRID, 32)
    small = compact(vectors, projection)
    np.testing.assert_allclose(small @ small.T, vectors @ vectors.T, atol=1e-5)


def test_projection_finds_the_subspace_the_data_lives_in() -> None:
    h, w, c = GRID
    rng = np.random.default_rng(7)
    basis = rng.normal(size=(4, c))
    coefficients = rng.normal(size=(200, h, w, 4))
    maps = (coefficients @ basis).transpose(0, 3, 1, 2)  # every position in a 4-D subspace
    vectors = similarity_vectors(maps)
    small = compact(vectors, fit_projection(vectors, GRID, 4))
    np.testing.assert_allclose(small @ small.T, vectors @ vectors.T, atol=1e-4)
    fewer = compact(vectors, fit_projection(vectors, GRID, 3))
    assert np.abs(fewer @ fewer.T - vectors @ vectors.T).max() > 0.05


# -- versions on storage --------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 versions are cached locally: keep that cache inside the test's folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def ids_for(n: int, tag: str = "img") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"{tag}-{i:04d}" for i in range(n)],
            "category": ["shoe" if i % 3 else "bag" for i in range(n)],
            "row": np.arange(n, dtype=np.int64),
        }
    )


def publish(store: Store, vectors: np.ndarray, **kwargs):
    return publish_index(
        store,
        "unsupervised",
        vectors,
        ids_for(len(vectors)),
        grid=GRID,
        source={"encoder_version": "x"},
        **kwargs,
    )


def listed_versions(store: Store) -> dict[str, set[str]]:
    folders: dict[str, set[str]] = {}
    for info in store.list(PREFIX):
        rest = info.key[len(PREFIX) :]
        if "/" in rest:
            folder, name = rest.split("/", 1)
            folders.setdefault(folder, set()).add(name)
    return folders


def test_publish_and_open_round_trip(store: Store) -> None:
    vectors = random_vectors(300, seed=8)
    ids = ids_for(300)
    version = publish_index(
        store,
        "unsupervised",
        vectors,
        ids,
        grid=GRID,
        source={"encoder_version": "x"},
        keep=2,
    )
    assert version.kind == "exact"
    assert (version.size, version.dimension) == (300, 288)
    assert version.self_check == {"queries": 50, "found_first": 50}
    assert version.pruned == ()
    assert version.uri == store.uri(f"{PREFIX}{version.version}/")
    assert store.read_pointer(PREFIX + "CURRENT") == version.version
    assert listed_versions(store) == {
        version.version: {"vectors.npy", "index.faiss", "ids.parquet", "metadata.json"}
    }

    index = open_index(store, "unsupervised")
    assert index.version == version.version
    assert index.metadata["source"] == {"encoder_version": "x"}
    assert index.metadata["grid"] == [3, 3, 32]
    assert index.metadata["self_check"] == version.self_check
    assert index.index.vectors.dtype == np.float16
    np.testing.assert_array_equal(index.index.vectors, vectors.astype(np.float16))
    pd.testing.assert_frame_equal(index.ids, ids)
    assert index.row_of("img-0123") == 123
    with pytest.raises(InputError, match="not in the unsupervised index"):
        index.row_of("nope")

    sample = np.linspace(0, 299, 25).astype(int)
    scores, rows = index.index.search(vectors[sample], 3)
    np.testing.assert_array_equal(rows[:, 0], sample)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=2e-3)  # float16 storage


def test_ann_version_round_trips_with_its_projection(store: Store) -> None:
    vectors = random_vectors(400, seed=9)
    config = IndexConfig(kind="hnsw", compact_channels=16, hnsw_ef_search=64, rerank=50)
    version = publish(store, vectors, config=config)
    assert version.kind == "hnsw"
    assert version.self_check == {"queries": 50, "found_first": 50}
    assert "projection.npy" in listed_versions(store)[version.version]
    index = open_index(store, "unsupervised").index
    assert index.kind == "hnsw"
    assert index.config == config
    assert index.index.hnsw.efSearch == 64
    assert index.projection.shape == (32, 16)
    sample = np.arange(0, 400, 7)
    scores, rows = index.search(vectors[sample], 5)
    np.testing.assert_array_equal(rows[:, 0], sample)
    assert_scores_are_exact(index, vectors[sample], scores, rows)


def test_switch_is_atomic_and_old_versions_are_kept_then_pruned(store: Store) -> None:
    first, second, third = (random_vectors(200, seed=s) for s in (10, 11, 12))
    hnsw = IndexConfig(kind="hnsw", compact_channels=16)
    v1 = publish(store, first, config=hnsw, keep=2)
    reader_a = open_index(store, "unsupervised")
    assert reader_a.version == v1.version
    queries = first[:20]
    before = reader_a.index.search(queries, 5)
    np.testing.assert_array_equal(before[1][:, 0], np.arange(20))

    v2 = publish(store, second, keep=2)
    assert v2.version > v1.version
    assert v2.pruned == ()
    assert store.read_pointer(PREFIX + "CURRENT") == v2.version
    after = reader_a.index.search(queries, 5)  # the old reader keeps its version
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    reader_b = open_index(store, "unsupervised")
    assert reader_b.version == v2.version
    assert reader_b.index.search(queries, 1)[0].max() < 0.5  # none of v1's images in v2

    v3 = publish(store, third, keep=2)
    assert v3.pruned == (v1.version,)
    assert store.read_pointer(PREFIX + "CURRENT") == v3.version
    folders = listed_versions(store)
    assert set(folders) == {v2.version, v3.version}
    assert versions(store, "unsupervised") == [v2.version, v3.version]
    assert not any(v1.version in info.key for info in store.list("indexes/"))
    for files in folders.values():  # a listed version is always a finished one
        assert "metadata.json" in files

    # Reader A still works after its version was deleted: HNSW re-ranks with the
    # memory-mapped vectors (local: the unlinked file stays mapped; S3: the local cache).
    again = reader_a.index.search(queries, 5)
    np.testing.assert_array_equal(again[1], before[1])
    np.testing.assert_allclose(again[0], before[0])
    np.testing.assert_array_equal(reader_a.index.vectors[:3], first[:3].astype(np.float16))
    if isinstance(store, LocalStore):
        assert not (store.local_path(f"{PREFIX}{v1.version}/metadata.json")).exists()

    pinned = open_index(store, "unsupervised", version=v2.version)
    assert pinned.version == v2.version
    _, rows = pinned.index.search(second[:10], 1)
    np.testing.assert_array_equal(rows[:, 0], np.arange(10))
    assert open_index(store, "unsupervised").version == v3.version


def dominated_vectors() -> np.ndarray:
    """Twenty orthogonal unit rows, except row 5 is row 0 ten times longer: querying row 0
    returns row 5 first, scoring 10 > 1; every other row finds itself."""
    vectors = np.eye(20, 32, dtype=np.float32)
    vectors[5] = 10 * vectors[0]
    return vectors


def test_self_check_failure_publishes_nothing(store: Store) -> None:
    vectors = dominated_vectors()
    grid = (1, 1, 32)
    index = VectorIndex(
        kind="exact",
        index=build_index(vectors, grid).index,
        vectors=vectors,
        grid=grid,
        projection=None,
        config=IndexConfig(),
    )
    scores, rows = index.search(vectors[:1], 2)
    assert rows[0, 0] == 5 and scores[0, 0] == pytest.approx(10, abs=1e-4)

    def attempt():
        return publish_index(
            store, "unsupervised", vectors, ids_for(20), grid=grid, source={}, keep=2
        )

    with pytest.raises(SelfCheckFailed, match="found only 19 of 20"):
        attempt()
    assert store.read_pointer(PREFIX + "CURRENT") is None
    assert list(store.list(PREFIX)) == []
    with pytest.raises(InputError, match="tiefvision rebuild-index"):
        open_index(store, "unsupervised")

    good = np.eye(20, 32, dtype=np.float32)  # row 5 back to its own direction
    live = publish_index(store, "unsupervised", good, ids_for(20), grid=grid, source={})
    assert live.self_check == {"queries": 20, "found_first": 20}
    with pytest.raises(SelfCheckFailed):
        attempt()
    assert store.read_pointer(PREFIX + "CURRENT") == live.version
    assert set(listed_versions(store)) == {live.version}
    assert open_index(store, "unsupervised").version == live.version


def test_exact_duplicates_pass_the_self_check(store: Store) -> None:
    vectors = random_vectors(30, seed=14)
    vectors[10:20] = vectors[0]  # same image ten more times: equal scores count as found
    version = publish(store, vectors)
    assert version.self_check == {"queries": 30, "found_first": 30}


def test_missing_index_and_unknown_space_are_input_errors(store: Store) -> None:
    with pytest.raises(InputError, match="tiefvision rebuild-index") as missing:
        open_index(store, "unsupervised")
    assert "--space unsupervised" in str(missing.value)
    with pytest.raises(InputError, match="tiefvision rebuild-index --space supervised"):
        open_index(store, "supervised")
    with pytest.raises(InputError, match="unknown space 'colour'"):
        open_index(store, "colour")
    with pytest.raises(InputError, match="unknown space"):
        publish_index(store, "colour", random_vectors(3, 0), ids_for(3), grid=GRID, source={})
    with pytest.raises(InputError, match="tiefvision encode"):
        publish_index(
            store, "unsupervised", np.zeros((0, 288), np.float32), ids_for(0), grid=GRID, source={}
        )
    assert list(store.list("indexes/")) == []
