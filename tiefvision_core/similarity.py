"""The seed's unsupervised similarity, as one inner product.

Similarity of two crops = mean over grid positions of the cosine between their position
encodings. L2-normalise every position, scale it by ``1/sqrt(H·W)`` and flatten: the inner
product of two such vectors is exactly that mean (``Σ_p <a_p, b_p> / (H·W)``), so an
inner-product index answers it exactly, and a self-similarity is 1.

Vectors are flattened position-major (HWC), the layout of the encoding shards.
"""

from __future__ import annotations

import numpy as np

__all__ = ["global_pool_vectors", "mean_cosine", "similarity_vectors"]

_EPS = 1e-6


def _normalise_positions(maps: np.ndarray) -> np.ndarray:
    maps = np.asarray(maps, np.float32)
    return maps / np.maximum(np.linalg.norm(maps, axis=1, keepdims=True), _EPS)


def similarity_vectors(maps: np.ndarray) -> np.ndarray:
    """(N, C, H, W) maps → (N, H·W·C) float32 unit vectors whose inner product is the mean
    cosine of corresponding positions."""
    n, _, h, w = maps.shape
    unit = _normalise_positions(maps) / np.float32(np.sqrt(h * w))
    return np.ascontiguousarray(unit.transpose(0, 2, 3, 1).reshape(n, -1))


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The seed's formula, position by position: for tests and as documentation."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    _, h, w = a.shape
    total = 0.0
    for y in range(h):
        for x in range(w):
            u, v = a[:, y, x], b[:, y, x]
            total += float(u @ v) / max(np.linalg.norm(u) * np.linalg.norm(v), _EPS**2)
    return total / (h * w)


def global_pool_vectors(maps: np.ndarray) -> np.ndarray:
    """(N, C, H, W) → (N, C) unit vectors of the global average pool: the position-free
    baseline every retrieval number is compared with."""
    pooled = np.asarray(maps, np.float32).mean(axis=(2, 3))
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), _EPS)
