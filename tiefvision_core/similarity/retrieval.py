"""Retrieval quality with same-label ground truth: precision@k and mAP@k.

Every photo of the evaluated set is a query once; the rest of the set is the gallery; a
result is relevant when it has the query's label (the catalog's ``product_id``, or a class
for class-level evaluation). Why mAP@10 beside P@1: a search page shows ten results, and
mAP rewards putting *all* other views of a product near the top, not just one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["RetrievalScores", "ranked_neighbours", "retrieval_scores", "score_vectors"]


@dataclass(frozen=True)
class RetrievalScores:
    queries: int
    precision_at_1: float
    precision_at_5: float
    map_at_10: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def ranked_neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    """(N, k) rows of each row's k most similar other rows, by inner product (exact)."""
    vectors = np.asarray(vectors, np.float32)
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    k = min(k, len(vectors) - 1)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def retrieval_scores(
    neighbours: np.ndarray, labels: np.ndarray, queries: np.ndarray | None = None
) -> RetrievalScores:
    """P@1, P@5 and mAP@10 of ranked ``neighbours`` (N, ≥10 or fewer) for ``labels`` (N,).

    AP@10 = Σ_{i≤10} P@i · rel_i / min(10, relevant in gallery); queries whose label has no
    other member are skipped (nothing to find). ``queries``: the gallery rows that asked,
    one per row of ``neighbours``, when only some did (default: every row, in order) — a
    held-out query searches the whole gallery, as it does live. A neighbour of -1 (a search
    that found fewer) is never relevant.
    """
    labels = np.asarray(labels)
    neighbours = np.asarray(neighbours)
    rows = np.arange(len(labels)) if queries is None else np.asarray(queries, np.int64)
    query_labels = labels[rows]
    relevant = (labels[neighbours] == query_labels[:, None]) & (neighbours >= 0)
    _, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    counts = sizes[inverse.reshape(-1)][rows] - 1
    usable = counts > 0
    rel = relevant[usable]
    depth = min(10, rel.shape[1])
    hits = rel[:, :depth]
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, depth + 1)
    ap = (precision_at * hits).sum(axis=1) / np.minimum(depth, counts[usable])
    return RetrievalScores(
        queries=int(usable.sum()),
        precision_at_1=round(float(rel[:, 0].mean()), 4),
        precision_at_5=round(float(rel[:, : min(5, rel.shape[1])].mean()), 4),
        map_at_10=round(float(ap.mean()), 4),
    )


def score_vectors(vectors: np.ndarray, labels: np.ndarray) -> RetrievalScores:
    """Every row a query against the others (exact inner product), scored by ``labels``:
    the measure every bench and training check of a space uses."""
    return retrieval_scores(ranked_neighbours(vectors, 10), labels)
