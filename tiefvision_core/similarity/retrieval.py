"""Retrieval quality with same-label ground truth: precision@k and mAP@k.

Every photo of the evaluated set is a query once; the rest of the set is the gallery; a
result is relevant when it has the query's label (the catalog's ``product_id``, or a class
for class-level evaluation). Why mAP@10 beside P@1: a search page shows ten results, and
mAP rewards putting *all* other views of a product near the top, not just one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "PerQuery",
    "RetrievalScores",
    "per_query",
    "product_interval",
    "ranked_neighbours",
    "retrieval_scores",
    "score_vectors",
]


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


@dataclass(frozen=True)
class PerQuery:
    """Each usable query's own figures (rows aligned): its label, whether its first result
    is relevant, its precision over the first five and its AP@10 — what the means of
    :class:`RetrievalScores` are taken over, and what an interval resamples."""

    labels: np.ndarray
    hit_at_1: np.ndarray
    precision_at_5: np.ndarray
    ap_at_10: np.ndarray
    #: Where each usable query is among the rows of ``neighbours`` it was computed from.
    asked: np.ndarray


def per_query(
    neighbours: np.ndarray, labels: np.ndarray, queries: np.ndarray | None = None
) -> PerQuery:
    """The figures of every usable query (see :func:`retrieval_scores` for the arguments):
    a query whose label has no other member has nothing to find and is left out."""
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
    return PerQuery(
        query_labels[usable],
        rel[:, 0].astype(np.float64),
        rel[:, : min(5, rel.shape[1])].mean(axis=1),
        ap.astype(np.float64),
        np.flatnonzero(usable),
    )


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
    figures = per_query(neighbours, labels, queries)
    return RetrievalScores(
        queries=len(figures.labels),
        precision_at_1=round(float(figures.hit_at_1.mean()), 4),
        precision_at_5=round(float(figures.precision_at_5.mean()), 4),
        map_at_10=round(float(figures.ap_at_10.mean()), 4),
    )


#: Resamples of the products behind an interval, and its coverage.
BOOTSTRAP_ROUNDS = 1000
INTERVAL_LEVEL = 0.95


def product_interval(
    values: np.ndarray,
    products: np.ndarray,
    *,
    rounds: int = BOOTSTRAP_ROUNDS,
    level: float = INTERVAL_LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean of per-query ``values`` (an AP@10, or the
    difference of two spaces' AP@10 on the same query), resampling **products** with
    replacement, each drawn product bringing all its queries.

    Why products, not queries: the photos of one product rise or fall together (they share
    a look, and each is the others' answer), so resampling photos as if independent gives
    intervals that are too narrow on a catalog of a few products — exactly where a user
    needs to tell a real gain from noise. Seeded: the same interval for the same figures."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        raise ValueError("an interval needs at least one query")
    if not 0 < level < 1:
        raise ValueError(f"level {level}: choose a coverage in (0, 1)")
    _, group = np.unique(np.asarray(products), return_inverse=True)
    group = group.reshape(-1)
    sums = np.bincount(group, weights=values)
    sizes = np.bincount(group).astype(np.float64)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(sums), size=(rounds, len(sums)))
    means = sums[drawn].sum(axis=1) / sizes[drawn].sum(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return round(float(low), 4), round(float(high), 4)


def score_vectors(vectors: np.ndarray, labels: np.ndarray) -> RetrievalScores:
    """Every row a query against the others (exact inner product), scored by ``labels``:
    the measure every bench and training check of a space uses."""
    return retrieval_scores(ranked_neighbours(vectors, 10), labels)
