"""The seed's unsupervised similarity, as one inner product.

Similarity of two crops = mean over grid positions of the cosine between their position
encodings. L2-normalise every position, scale it by ``1/sqrt(H·W)`` and flatten: the inner
product of two such vectors is exactly that mean (``Σ_p <a_p, b_p> / (H·W)``), so an
inner-product index answers it exactly, and a self-similarity is 1.

The grid is the encoder's map average-pooled to ``SIMILARITY_GRID``×``SIMILARITY_GRID``
positions (``similarity_grid``) before that. Measured on the 713 real photos of
clothing-small (``bench/clothing.py``, EfficientNet-Lite0, class-level, every photo a
query): the full 7×7 map gives P@1 0.738 / mAP@10 0.556, *below* the global-average-pool
baseline (0.741 / 0.576) — a 32-pixel cell is too fine for products that are never in quite
the same place — while 3×3 gives 0.753 / 0.610 and keeps the layout (top of a dress vs its
hem) that a global pool throws away. Pooling is linear, so it commutes with the supervised
space's 1×1 projection: pooled maps serve both spaces and make training 5× cheaper.

Vectors are flattened position-major (HWC), the layout of the encoding shards.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SIMILARITY_GRID",
    "global_pool_vectors",
    "mean_cosine",
    "similarity_grid",
    "similarity_vectors",
]

SIMILARITY_GRID = 3
_EPS = 1e-6


def _bins(size: int, cells: int) -> list[tuple[int, int]]:
    """Adaptive-average-pool bins (PyTorch's rule: they overlap when size % cells != 0)."""
    return [(i * size // cells, -(-(i + 1) * size // cells)) for i in range(cells)]


def similarity_grid(maps: np.ndarray, cells: int = SIMILARITY_GRID) -> np.ndarray:
    """(N, C, H, W) → (N, C, min(H, cells), min(W, cells)): the positions similarity is
    measured on, each the average of the encoder positions in its cell."""
    maps = np.asarray(maps, np.float32)
    _, _, h, w = maps.shape
    if h <= cells and w <= cells:
        return maps
    rows = np.stack([maps[:, :, a:b].mean(axis=2) for a, b in _bins(h, min(h, cells))], 2)
    return np.stack([rows[..., a:b].mean(axis=3) for a, b in _bins(w, min(w, cells))], 3)


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
            total += float(u @ v) / max(float(np.linalg.norm(u) * np.linalg.norm(v)), _EPS**2)
    return total / (h * w)


def global_pool_vectors(maps: np.ndarray) -> np.ndarray:
    """(N, C, H, W) → (N, C) unit vectors of the global average pool: the position-free
    baseline every retrieval number is compared with."""
    pooled = np.asarray(maps, np.float32).mean(axis=(2, 3))
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), _EPS)
