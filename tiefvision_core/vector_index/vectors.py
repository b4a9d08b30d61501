"""Vector indexes with FAISS: exact while it fits, ANN + exact re-ranking beyond.

One index version holds, for N crops of one space (D numbers each, see ``similarity``):

* ``vectors.npy`` — the full vectors, float16, read memory-mapped: query-by-id and the
  exact re-ranking read only the rows they need;
* ``index.faiss`` — either an exact inner-product index over the full vectors (small
  catalogs: ``N·D·4`` bytes under ``exact_max_bytes``), or an ANN index (HNSW, or IVF-PQ
  for the compressed option) over a compact representation;
* ``projection.npy`` — the compact representation's per-position projection (C → c),
  fitted on the data: the top eigenvectors of the positions' second-moment matrix, so
  inner products are preserved as well as ``c`` dimensions allow (no centring: the score
  is an inner product, not a distance to the mean).

ANN search returns ``rerank`` candidates which are re-scored with the full vectors, so the
reported scores are always exact similarities and the ranking among candidates is exact.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from tiefvision_core.vector_index.kinds import IndexKind, IndexKindChoice

__all__ = [
    "IndexConfig",
    "VectorIndex",
    "build_index",
    "compact_vectors",
    "fit_projection",
    "update_index",
]


@dataclass(frozen=True)
class IndexConfig:
    """How an index is built; saved in its metadata."""

    # Exact search scans every float32 vector per query: up to 64 MiB (~1,450 photos of
    # 11,520 numbers) that stays under ~15 ms; at 10,000 photos it took 172 ms (bench/api.py).
    exact_max_bytes: int = 64 << 20
    kind: IndexKindChoice = "auto"
    compact_channels: int = 64
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    ivf_lists: int | None = None  # default: ~4·sqrt(N)
    pq_bytes: int = 64  # IVF-PQ code size per vector (the compressed option)
    ivf_probe: int = 32
    rerank: int = 100
    sample_for_training: int = 50_000

    def choose(self, n: int, dim: int) -> IndexKind:
        if self.kind != "auto":
            return self.kind
        return "exact" if n * dim * 4 <= self.exact_max_bytes else "hnsw"


def fit_projection(
    vectors: np.ndarray,
    grid: tuple[int, int, int],
    channels: int,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """(C, c) projection of position vectors preserving inner products best (top
    eigenvectors of their second-moment matrix), fitted on the rows of ``vectors`` (or the
    given ``rows`` of it), read in chunks: memory stays flat for any sample size."""
    c_full = grid[2]
    rows = np.arange(len(vectors)) if rows is None else np.asarray(rows)
    moment = np.zeros((c_full, c_full), np.float64)
    for part in _batches(len(rows), 1024):
        positions = np.asarray(vectors[rows[part]], np.float32).reshape(-1, c_full)
        moment += positions.T @ positions
    moment /= max(1, len(rows) * (grid[0] * grid[1]))
    _, eigenvectors = np.linalg.eigh(moment)
    keep = min(channels, c_full)
    return np.ascontiguousarray(eigenvectors[:, ::-1][:, :keep].astype(np.float32))


def compact_vectors(vectors: np.ndarray, grid: tuple[int, int, int], projection: np.ndarray):
    """Vectors of a grid as the ANN stage searches them: each position's channels
    projected onto ``projection`` (from :func:`fit_projection`), positions concatenated."""
    h, w, c_full = grid
    positions = np.asarray(vectors, np.float32).reshape(len(vectors), h * w, c_full)
    return np.ascontiguousarray((positions @ projection).reshape(len(vectors), -1))


def _batches(n: int, size: int) -> Iterable[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@dataclass(frozen=True)
class BuiltIndex:
    kind: IndexKind
    index: faiss.Index
    projection: np.ndarray | None
    config: IndexConfig


def build_index(
    vectors: np.ndarray, grid: tuple[int, int, int], config: IndexConfig | None = None
) -> BuiltIndex:
    """Build the FAISS index for ``vectors`` (N, D) (float16 or float32, may be a memmap);
    ``grid`` = (H, W, C) of the flattened layout."""
    config = config or IndexConfig()
    n, dim = vectors.shape
    kind = config.choose(n, dim)
    if kind == "exact":
        return BuiltIndex("exact", _flat(vectors), None, config)
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(n, size=min(n, config.sample_for_training), replace=False))
    projection = fit_projection(vectors, grid, config.compact_channels, rows=sample)
    compact_dim = projection.shape[1] * grid[0] * grid[1]
    if kind == "hnsw":
        index = _empty_hnsw(compact_dim, config)
    else:
        lists = config.ivf_lists or max(1, min(n // 39, int(4 * np.sqrt(n))))
        quantizer = faiss.IndexFlatIP(compact_dim)
        sub = config.pq_bytes
        while compact_dim % sub:
            sub //= 2
        index = faiss.IndexIVFPQ(quantizer, compact_dim, lists, sub, 8, faiss.METRIC_INNER_PRODUCT)
        training = np.concatenate(  # in chunks: never the float32 full sample at once
            [
                compact_vectors(vectors[sample[part]], grid, projection)
                for part in _batches(len(sample), 4096)
            ]
        )
        index.train(training)
        index.nprobe = min(lists, config.ivf_probe)
    _add_compact(index, vectors, grid, projection)
    return BuiltIndex(kind, index, projection, config)


def _flat(vectors: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatIP(vectors.shape[1])
    for part in _batches(len(vectors), 4096):
        index.add(np.ascontiguousarray(vectors[part], np.float32))
    return index


def _empty_hnsw(dim: int, config: IndexConfig) -> faiss.Index:
    index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = config.hnsw_ef_construction
    index.hnsw.efSearch = config.hnsw_ef_search
    return index


def _add_compact(
    index: faiss.Index,
    vectors: np.ndarray,
    grid: tuple[int, int, int],
    projection: np.ndarray,
    start: int = 0,
) -> None:
    """Add rows ``start:`` of ``vectors`` (their ids = their row numbers)."""
    for part in _batches(len(vectors) - start, 4096):
        rows = slice(start + part.start, start + part.stop)
        index.add(compact_vectors(vectors[rows], grid, projection))


def update_index(previous: VectorIndex, vectors: np.ndarray, kept: np.ndarray) -> BuiltIndex:
    """An index over ``vectors`` that reuses what ``previous`` learnt, without retraining.

    ``vectors`` must hold the previous rows ``kept`` (their old row numbers, ascending) first,
    in that order, then the new rows. Per kind:

    * exact — a flat copy of the vectors (there is nothing to learn);
    * hnsw — the same projection, a fresh graph over all compact vectors: HNSW cannot
      delete, and tombstones would keep removed photos as graph hops and cost a filter on
      every query; linking N compact vectors costs a fraction of encoding the changes;
    * ivfpq — the trained coarse quantizer and PQ codebooks, the stored codes of kept rows
      (removed rows dropped with ``remove_ids``, kept rows renumbered in place), codes
      computed for the new rows only.
    """
    kept = np.asarray(kept, np.int64)
    if len(kept) and np.any(np.diff(kept) <= 0):
        raise ValueError("kept rows must be old row numbers in ascending order")
    config, grid = previous.config, previous.grid
    if previous.kind == "exact":
        return BuiltIndex("exact", _flat(vectors), None, config)
    projection = previous.projection
    assert projection is not None, "ANN indexes always have a projection"
    if previous.kind == "hnsw":
        index = _empty_hnsw(projection.shape[1] * grid[0] * grid[1], config)
        _add_compact(index, vectors, grid, projection)
        return BuiltIndex("hnsw", index, projection, config)
    index = faiss.clone_index(previous.index)
    renumber = np.full(len(previous), -1, np.int64)
    renumber[kept] = np.arange(len(kept))
    gone = np.flatnonzero(renumber < 0)
    if len(gone):
        index.remove_ids(faiss.IDSelectorBatch(gone))
    _renumber_lists(faiss.extract_index_ivf(index), renumber)
    _add_compact(index, vectors, grid, projection, start=len(kept))
    faiss.extract_index_ivf(index).nprobe = faiss.extract_index_ivf(previous.index).nprobe
    return BuiltIndex("ivfpq", index, projection, config)


def _renumber_lists(index: faiss.IndexIVF, renumber: np.ndarray) -> None:
    """Rewrite the ids stored in every inverted list through ``renumber`` (old → new)."""
    lists = index.invlists
    assert lists is not None  # an IVF index read or built here owns its inverted lists
    for number in range(index.nlist):
        size = lists.list_size(number)
        if not size:
            continue
        ids = faiss.rev_swig_ptr(lists.get_ids(number), size).copy()
        codes = faiss.rev_swig_ptr(lists.get_codes(number), size * lists.code_size).copy()
        new_ids = np.ascontiguousarray(renumber[ids])
        lists.update_entries(number, 0, size, faiss.swig_ptr(new_ids), faiss.swig_ptr(codes))


def _rescore(candidates: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Exact inner products of the candidates' stored (float16) vectors with the query.

    Why torch: NumPy converts float16 element by element (~8 ms for 100 candidates of
    11,520 numbers, most of a search); torch converts with vector instructions. Only when
    torch is already loaded (a server, an encoder): importing it costs a cold
    ``tiefvision search --id`` ~2 s, far more than NumPy's few milliseconds once.
    """
    torch = sys.modules.get("torch")
    if candidates.dtype != np.float16 or torch is None:
        return np.asarray(candidates, np.float32) @ np.asarray(query, np.float32)
    block = torch.from_numpy(np.ascontiguousarray(candidates)).float()
    return (block @ torch.from_numpy(np.ascontiguousarray(query, np.float32))).numpy()


class VectorIndex:
    """One index version opened for search: FAISS index + memory-mapped full vectors."""

    def __init__(
        self,
        *,
        kind: IndexKind,
        index: faiss.Index,
        vectors: np.ndarray,
        grid: tuple[int, int, int],
        projection: np.ndarray | None,
        config: IndexConfig,
    ) -> None:
        self.kind, self.index, self.vectors = kind, index, vectors
        self.grid, self.projection, self.config = grid, projection, config

    @classmethod
    def load(cls, folder: Path, metadata: dict) -> VectorIndex:
        config = IndexConfig(**metadata["config"])
        index = faiss.read_index(str(folder / "index.faiss"))
        if metadata["kind"] == "hnsw":
            assert isinstance(index, faiss.IndexHNSW)  # read_index returns the concrete class
            index.hnsw.efSearch = config.hnsw_ef_search
        elif metadata["kind"] == "ivfpq":
            ivf = faiss.extract_index_ivf(index)
            ivf.nprobe = min(ivf.nlist, config.ivf_probe)
        projection_file = folder / "projection.npy"
        return cls(
            kind=metadata["kind"],
            index=index,
            vectors=np.load(folder / "vectors.npy", mmap_mode="r"),
            grid=tuple(metadata["grid"]),
            projection=np.load(projection_file) if projection_file.exists() else None,
            config=config,
        )

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def search(
        self, queries: np.ndarray, k: int, *, candidates: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (scores, rows) per query; scores are exact similarities. Rows are -1
        where fewer than ``k`` results exist."""
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        k = min(k, len(self))
        if self.kind == "exact":
            scores, rows = self.index.search(queries, k)
            return scores, rows
        wanted = min(len(self), max(k, candidates or self.config.rerank))
        assert self.projection is not None, "ANN indexes always have a projection"
        _, found = self.index.search(compact_vectors(queries, self.grid, self.projection), wanted)
        out_scores = np.full((len(queries), k), -np.inf, np.float32)
        out_rows = np.full((len(queries), k), -1, np.int64)
        for q, rows in enumerate(found):
            rows = rows[rows >= 0]
            exact = _rescore(self.vectors[np.sort(rows)], queries[q])
            order = np.argsort(-exact)[:k]
            out_scores[q, : len(order)] = exact[order]
            out_rows[q, : len(order)] = np.sort(rows)[order]
        return out_scores, out_rows

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "size": len(self), "config": asdict(self.config)}
