"""Whitening learned without labels, and Deep Ranking started from it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tiefvision_core.similarity.deep_ranking import DeepRankingConfig, ProjectionNet, fit_held_out
from tiefvision_core.similarity.whitening import fit_whitening


def _maps(rng: np.random.Generator, n: int = 60) -> np.ndarray:
    """Per-position encodings with one loud shared direction and unequal variances."""
    base = rng.normal(size=(n, 6, 2, 2)) * np.array([5.0, 1, 1, 0.5, 0.2, 0.1])[None, :, None, None]
    return (base + 3.0).astype(np.float32)


def test_the_whitened_positions_have_zero_mean_and_near_unit_covariance() -> None:
    maps = _maps(np.random.default_rng(0), 400)
    weight, bias = fit_whitening(maps, np.arange(400), shrink=1e-6)
    positions = maps.transpose(0, 2, 3, 1).reshape(-1, 6).astype(np.float64)
    out = positions @ weight.T.astype(np.float64) + bias
    assert np.abs(out.mean(0)).max() < 1e-3
    assert np.allclose(np.cov(out.T, bias=True), np.eye(6), atol=1e-2)


def test_only_the_given_rows_teach_the_whitening() -> None:
    maps = _maps(np.random.default_rng(1))
    changed = maps.copy()
    changed[30:] = 100.0  # rows outside the fit
    first = fit_whitening(maps, np.arange(30), shrink=1.0)
    second = fit_whitening(changed, np.arange(30), shrink=1.0)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])


def test_shrink_must_be_positive_and_rows_non_empty() -> None:
    maps = _maps(np.random.default_rng(2))
    with pytest.raises(ValueError, match="shrink"):
        fit_whitening(maps, np.arange(10), shrink=0)
    with pytest.raises(ValueError, match="at least one"):
        fit_whitening(maps, [], shrink=1.0)


def test_whitened_start_is_learned_from_photos_that_are_not_scored_only() -> None:
    """With ``init="whitened"`` the projection starts from the whitening (no training epoch
    kept: max_epochs=0), and that whitening never sees a scored photo: replacing them by
    noise leaves the model unchanged."""
    rng = np.random.default_rng(3)
    labels = np.array([f"p{i}" for i in range(12) for _ in range(4)])
    maps = rng.normal(size=(12, 6, 2, 2))[np.arange(48) // 4] + rng.normal(size=(48, 6, 2, 2))
    maps = maps.astype(np.float32)
    split = np.isin(labels, ["p0", "p1", "p2"])
    config = replace(DeepRankingConfig(), init="whitened", max_epochs=0, whitening_shrink=0.5)
    first = fit_held_out(maps, labels, split, config=config)
    weight, bias = fit_whitening(maps, np.flatnonzero(~split), 0.5)
    expected = ProjectionNet(6)
    expected.start_from(weight, bias)
    for name, value in expected.state_dict().items():
        assert torch.allclose(first.trained.net.state_dict()[name], value), name
    noisy = maps.copy()
    noisy[split] = rng.normal(size=noisy[split].shape) * 9
    second = fit_held_out(noisy, labels, split, config=config)
    for name, value in first.trained.net.state_dict().items():
        assert torch.equal(value, second.trained.net.state_dict()[name]), name
    identity = fit_held_out(maps, labels, split, config=replace(config, init="identity"))
    assert torch.equal(identity.trained.net.conv.weight[:, :, 0, 0], torch.eye(6))
