"""The first-stage search vector: aggregations of the per-position encodings against the
seed's 3×3 mean-cosine grid, on real photos, in one run (issue 30, item 3).

    python bench/search_vector.py [--data ../shared/data] [--shortlist 100]

Every photo of ``clothing-small`` (class = relevant) and of ``grocery-packages`` (product =
relevant) is a query against the rest, from the same 7×7 maps (EfficientNet-Lite0, the
whole photo at 224×224, what ``encode`` stores). Rows:

* ``grid 3×3 mean cosine`` — the default space (11,520 numbers per photo);
* ``average pool`` / ``GeM p=3`` — one 1,280-d vector (channel-wise generalised mean);
* ``CroW`` — spatial weights from each position's activation energy, channel weights from
  sparsity (Kalantidis et al.), one 1,280-d vector;
* ``… → re-rank grid`` — the compact vector's top ``--shortlist`` re-ranked by the exact
  3×3 mean cosine (what an index that searches a compact vector and re-ranks would answer).

No training, nothing held out is tuned on: the figures are of fixed formulas.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
from clothing import encode_requests, photo_requests  # noqa: E402


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def gem(maps: np.ndarray, p: float = 3.0) -> np.ndarray:
    return _unit((np.clip(maps, 1e-6, None) ** p).mean(axis=(2, 3)) ** (1 / p))


def crow(maps: np.ndarray) -> np.ndarray:
    """Spatial weights ∝ the position's summed activation (normalised, square-rooted),
    channel weights log(total / share of positions where the channel fires)."""
    energy = maps.sum(axis=1, keepdims=True)
    norm = np.sqrt((energy**2).sum(axis=(2, 3), keepdims=True))
    spatial = np.sqrt(energy / np.maximum(norm, 1e-12))
    pooled = (maps * spatial).sum(axis=(2, 3))
    firing = (maps > 0).mean(axis=(2, 3)).mean(axis=0)
    weights = np.log(firing.sum() / np.maximum(firing, 1e-6))
    return _unit(pooled * weights)


def _reranked(compact: np.ndarray, exact: np.ndarray, shortlist: int) -> np.ndarray:
    """Each row's top-10 after re-ranking the compact vectors' top ``shortlist`` exactly."""
    scores = compact @ compact.T
    np.fill_diagonal(scores, -np.inf)
    top = np.argsort(-scores, axis=1)[:, :shortlist]
    exact_scores = np.einsum("nd,nkd->nk", exact, exact[top])
    order = np.argsort(-exact_scores, axis=1)[:, :10]
    return np.take_along_axis(top, order, axis=1)


def study(name: str, maps: np.ndarray, labels: np.ndarray, shortlist: int) -> None:
    from tiefvision_core.similarity.retrieval import (
        ranked_neighbours,
        retrieval_scores,
    )
    from tiefvision_core.similarity.unsupervised import similarity_grid, similarity_vectors

    grid = similarity_vectors(similarity_grid(maps))
    variants = {
        "grid 3×3 mean cosine": grid,
        "average pool": _unit(maps.mean(axis=(2, 3))),
        "GeM p=3": gem(maps),
        "CroW": crow(maps),
    }
    for label, vectors in variants.items():
        s = retrieval_scores(ranked_neighbours(vectors, 10), labels)
        print(f"{name:<18}{label:<30}{s.precision_at_1:>8.4f}{s.map_at_10:>9.4f}", flush=True)
        if label != "grid 3×3 mean cosine":
            r = retrieval_scores(_reranked(vectors, grid, shortlist), labels)
            text = f"{label} → re-rank grid"
            print(f"{name:<18}{text:<30}{r.precision_at_1:>8.4f}{r.map_at_10:>9.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--shortlist", type=int, default=100)
    args = parser.parse_args()
    from tiefvision_core.encoding.runtime import RuntimeConfig

    runtime = RuntimeConfig(backend="auto").build()
    print(f"{'catalog':<18}{'first-stage vector':<30}{'P@1':>8}{'mAP@10':>9}")
    grocery = args.data / "grocery-packages"
    for name, (requests, labels) in (
        ("clothing-small", photo_requests(args.data / "clothing-small")),
        ("grocery-packages", photo_requests(grocery / "images", grocery / "products.csv")),
    ):
        ids, maps = encode_requests(runtime, requests)
        study(name, maps, np.array([labels[i] for i in ids]), args.shortlist)


if __name__ == "__main__":
    main()
