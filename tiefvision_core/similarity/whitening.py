"""Whitening of the per-position encodings, learned from a catalog's photos without labels.

Why: an ImageNet encoder spends most of its variance on directions every photo of a catalog
shares (shelf, light, background); mean cosine then ranks by them. Centring the per-position
encodings on the catalog's mean and rescaling each principal direction by its standard
deviation (regularised: ``shrink`` × the mean eigenvalue is added, so near-empty directions
are not blown up) lets the directions that tell products apart count. It needs no product
id: every photo of the catalog teaches it (issue 30, item 1).

As a 1×1 convolution ``W x + b`` it is a :class:`~tiefvision_core.similarity.deep_ranking.
ProjectionNet` state, so Deep Ranking can start from it instead of the identity.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_whitening"]


def fit_whitening(
    maps: np.ndarray, rows: np.ndarray | list[int], shrink: float, block: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """(weight (C, C), bias (C,)) of the 1×1 convolution that whitens the per-position
    encodings of ``maps[rows]`` ((N, C, H, W)): ``weight @ x + bias`` = the encoding centred
    on their mean, rotated onto their principal directions and each divided by
    √(its variance + ``shrink`` × the mean variance). Float64 sums, ``block`` maps at a time
    (the catalog's maps may be float16 or memory-mapped)."""
    if shrink <= 0:
        raise ValueError(f"shrink must be > 0, got {shrink}")
    rows = np.asarray(rows, np.int64)
    if len(rows) == 0:
        raise ValueError("whitening needs at least one photo")
    channels = maps.shape[1]
    total = np.zeros(channels)
    outer = np.zeros((channels, channels))
    count = 0
    for start in range(0, len(rows), block):
        part = np.asarray(maps[rows[start : start + block]], np.float64)
        positions = part.transpose(0, 2, 3, 1).reshape(-1, channels)
        total += positions.sum(0)
        outer += positions.T @ positions
        count += len(positions)
    mean = total / count
    covariance = outer / count - np.outer(mean, mean)
    values, vectors = np.linalg.eigh(covariance)
    values = np.clip(values, 0.0, None)
    scale = 1.0 / np.sqrt(values + shrink * max(values.mean(), 1e-12))
    weight = (vectors * scale).T  # rows: principal directions, each rescaled
    return weight.astype(np.float32), (-weight @ mean).astype(np.float32)
