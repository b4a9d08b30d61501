"""The unsupervised similarity as one inner product: equal to the seed's mean of cosines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiefvision_core.similarity.unsupervised import (
    global_pool_vectors,
    mean_cosine,
    similarity_grid,
    similarity_vectors,
)


@pytest.mark.parametrize(("h", "w"), [(3, 3), (2, 4)])
def test_inner_product_equals_mean_of_cosines_for_every_pair(h: int, w: int) -> None:
    rng = np.random.default_rng(11)
    a = rng.normal(size=(4, 16, h, w)).astype(np.float32)
    b = rng.normal(size=(5, 16, h, w)).astype(np.float32)
    got = similarity_vectors(a) @ similarity_vectors(b).T
    want = np.array([[mean_cosine(a[i], b[j]) for j in range(len(b))] for i in range(len(a))])
    assert got.shape == (4, 5)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # The formula is non-trivial here: random maps are far from identical.
    assert np.abs(want).max() < 0.9


@pytest.mark.parametrize(("h", "w"), [(3, 3), (2, 4)])
def test_self_similarity_is_one(h: int, w: int) -> None:
    rng = np.random.default_rng(12)
    maps = rng.normal(size=(6, 16, h, w)) * rng.uniform(0.1, 50, size=(6, 1, h, w))
    vectors = similarity_vectors(maps)
    assert vectors.dtype == np.float32
    assert vectors.shape == (6, h * w * 16)
    np.testing.assert_allclose(np.einsum("ij,ij->i", vectors, vectors), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_layout_is_position_major_hwc() -> None:
    rng = np.random.default_rng(13)
    c, h, w = 16, 2, 4
    maps = rng.normal(size=(2, c, h, w)).astype(np.float32)
    vectors = similarity_vectors(maps)
    n, ch, y, x = 1, 5, 1, 2  # element (y, x, channel) sits at (y·W + x)·C + channel
    expected = maps[n, ch, y, x] / np.linalg.norm(maps[n, :, y, x]) / np.sqrt(h * w)
    assert vectors[n, (y * w + x) * c + ch] == pytest.approx(expected, rel=1e-5)
    # The whole block of one position is that position's normalised channel vector.
    block = vectors[n, (y * w + x) * c : (y * w + x + 1) * c]
    np.testing.assert_allclose(
        block, maps[n, :, y, x] / np.linalg.norm(maps[n, :, y, x]) / np.sqrt(h * w), rtol=1e-5
    )


def test_positive_scaling_of_one_position_changes_nothing() -> None:
    rng = np.random.default_rng(14)
    maps = rng.normal(size=(3, 16, 3, 3)).astype(np.float32)
    scaled = maps.copy()
    scaled[:, :, 1, 2] *= 7
    np.testing.assert_allclose(similarity_vectors(scaled), similarity_vectors(maps), atol=1e-6)
    # A negative factor is not a positive scaling: it flips that position's cosine.
    flipped = maps.copy()
    flipped[:, :, 1, 2] *= -1
    assert not np.allclose(similarity_vectors(flipped), similarity_vectors(maps), atol=1e-3)


def test_zero_positions_give_zeros_not_nan() -> None:
    rng = np.random.default_rng(15)
    maps = rng.normal(size=(2, 16, 3, 3)).astype(np.float32)
    maps[0, :, 0, 0] = 0.0
    maps[1] = 0.0
    vectors = similarity_vectors(maps)
    assert np.isfinite(vectors).all()
    np.testing.assert_array_equal(vectors[0, :16], 0.0)
    np.testing.assert_array_equal(vectors[1], 0.0)
    # The zero position contributes 0 to the mean: 8 of 9 positions remain.
    assert float(vectors[0] @ vectors[0]) == pytest.approx(8 / 9, abs=1e-5)
    assert mean_cosine(maps[0], maps[0]) == pytest.approx(8 / 9, abs=1e-9)
    assert float(vectors[1] @ vectors[0]) == 0.0


def test_global_pool_vectors_is_the_normalised_mean_over_positions() -> None:
    rng = np.random.default_rng(16)
    maps = rng.normal(loc=0.3, size=(5, 16, 2, 4)).astype(np.float32)
    pooled = global_pool_vectors(maps)
    assert pooled.shape == (5, 16)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-6)
    for i in range(len(maps)):
        mean = np.zeros(16)
        for y in range(2):
            for x in range(4):
                mean += maps[i, :, y, x].astype(np.float64)
        mean /= 8
        np.testing.assert_allclose(pooled[i], mean / np.linalg.norm(mean), atol=1e-6)


def test_global_pool_of_zero_map_is_zero_not_nan() -> None:
    pooled = global_pool_vectors(np.zeros((1, 8, 2, 2), np.float32))
    np.testing.assert_array_equal(pooled, 0.0)


@pytest.mark.parametrize(("h", "w"), [(7, 7), (7, 10), (14, 9), (2, 9), (3, 3)])
def test_similarity_grid_is_adaptive_average_pooling(h: int, w: int) -> None:
    maps = np.random.default_rng(17).normal(size=(2, 8, h, w)).astype(np.float32)
    want = torch.nn.functional.adaptive_avg_pool2d(
        torch.from_numpy(maps), (min(h, 3), min(w, 3))
    ).numpy()
    got = similarity_grid(maps, 3)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_similarity_grid_commutes_with_a_1x1_projection() -> None:
    """Why the supervised space may be trained and served on pooled maps: pooling then
    projecting is projecting then pooling."""
    maps = np.random.default_rng(18).normal(size=(3, 8, 7, 7)).astype(np.float32)
    conv = torch.nn.Conv2d(8, 8, 1)
    with torch.no_grad():
        pooled_first = conv(torch.from_numpy(similarity_grid(maps))).numpy()
        projected_first = similarity_grid(conv(torch.from_numpy(maps)).numpy())
    np.testing.assert_allclose(pooled_first, projected_first, atol=1e-5)
