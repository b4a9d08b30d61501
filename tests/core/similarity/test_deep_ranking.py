"""Deep Ranking maths: hinge loss, identity start, triplets and the product split."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from tiefvision_core.similarity.deep_ranking import (
    DeepRankingConfig,
    ProjectionNet,
    angle_hinge_loss,
    embed,
    fit_held_out,
    hardest_negatives,
    hinge_loss,
    train_projection,
    triplet_accuracy,
)
from tiefvision_core.similarity.retrieval import ranked_neighbours
from tiefvision_core.similarity.triplets import (
    group_negatives,
    held_out_split,
    make_triplets,
    mine_negatives,
    split_products,
    validation_split,
    with_mirror_positives,
)
from tiefvision_core.similarity.unsupervised import similarity_vectors


def test_hinge_loss_on_hand_computed_cases() -> None:
    pos = torch.tensor([0.9, 0.5, 0.2, 0.3])
    neg = torch.tensor([0.1, 0.45, 0.6, 0.3])
    # max(0, 0.1 - pos + neg): 0, 0.05, 0.5, 0.1
    assert hinge_loss(pos, neg, 0.1).item() == pytest.approx((0 + 0.05 + 0.5 + 0.1) / 4)
    assert hinge_loss(pos, neg, 0.0).item() == pytest.approx(0.4 / 4)


def test_identity_projection_reproduces_the_unsupervised_ranking() -> None:
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(30, 16, 3, 3)).astype(np.float32)
    net = ProjectionNet(16)
    with torch.no_grad():
        projected = embed(net, torch.from_numpy(maps)).numpy()
    unsupervised = similarity_vectors(maps)
    np.testing.assert_allclose(projected, unsupervised, atol=1e-5)
    np.testing.assert_array_equal(
        ranked_neighbours(projected, 10), ranked_neighbours(unsupervised, 10)
    )


def test_products_split_and_triplets_never_cross_it() -> None:
    labels = np.array([f"p{i // 4}" for i in range(40)])  # 10 products × 4 photos
    held_out = split_products(labels, 0.3, seed=3)
    assert len(held_out) == 3 and held_out == split_products(labels[::-1], 0.3, seed=3)
    test_rows = [i for i, label in enumerate(labels) if label in held_out]
    train_rows = [i for i, label in enumerate(labels) if label not in held_out]
    vectors = similarity_vectors(np.random.default_rng(1).normal(size=(40, 8, 2, 2)))
    negatives = mine_negatives(vectors, labels, 5)
    for rows in (train_rows, test_rows):
        triplets = make_triplets(labels, rows, random.Random(0), negatives)
        assert len(triplets) == len(rows)
        for anchor, positive, negative in triplets:
            assert {anchor, positive, negative} <= set(rows)
            assert labels[positive] == labels[anchor] and positive != anchor
            assert labels[negative] != labels[anchor]


def test_mined_negatives_are_the_most_similar_other_products() -> None:
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.6]], np.float32)
    labels = np.array(["a", "a", "b", "c"])
    mined = mine_negatives(vectors, labels, 2)
    assert mined[0] == [3, 2]  # c (0.8) before b (0.0); a's own photo never a negative
    assert 0 not in mined[1] and 1 not in mined[0]


def test_training_learns_a_direction_the_encoder_mixes_up() -> None:
    """Products differ in channel 0 only, swamped by noise in the other channels: the
    identity fails held-out triplets, the trained projection learns to weigh channel 0."""
    rng = np.random.default_rng(0)
    n_products, views = 16, 3
    labels = np.array([f"p{i}" for i in range(n_products) for _ in range(views)])
    signal = rng.normal(size=n_products) * 3
    maps = rng.normal(size=(len(labels), 8, 2, 2)).astype(np.float32) * 2
    maps[:, 0] += np.repeat(signal, views)[:, None, None]
    held_out = split_products(labels, 0.25, seed=0)
    split = np.array([label in held_out for label in labels])
    train_rows = list(np.flatnonzero(~split))
    test_rows = list(np.flatnonzero(split))
    negatives = mine_negatives(similarity_vectors(maps), labels, 5)
    test = make_triplets(labels, test_rows, random.Random(1), negatives)
    result = train_projection(
        maps,
        labels,
        train_rows,
        test,
        negatives=negatives,
        config=DeepRankingConfig(learning_rate=1e-2, max_epochs=40, patience=40, margin=0.2),
    )
    accuracy, _ = triplet_accuracy(result.net, maps, None, test)
    assert accuracy == result.best_accuracy
    assert result.best_accuracy >= result.unsupervised_accuracy + 0.2, result.metrics()


def test_mining_through_an_index_matches_the_exact_scan() -> None:
    """What a big catalog does (the current index answers) picks the same negatives as the
    exact scan, block by block."""
    from tiefvision_core.vector_index.vectors import IndexConfig, build_index

    rng = np.random.default_rng(4)
    labels = np.array([f"p{i // 3}" for i in range(60)])
    centres = rng.normal(size=(20, 8, 2, 2))
    maps = centres[np.arange(60) // 3] + 0.8 * rng.normal(size=(60, 8, 2, 2))
    vectors = similarity_vectors(maps.astype(np.float32))
    index = build_index(vectors, (2, 2, 8), IndexConfig(kind="exact")).index

    def neighbours(queries: np.ndarray, k: int) -> np.ndarray:
        return index.search(queries, k)[1]

    exact = mine_negatives(vectors, labels, 4, block=7)
    assert mine_negatives(vectors, labels, 4, neighbours=neighbours) == exact
    assert all(len(row) == 4 for row in exact)
    assert all(labels[j] != labels[i] for i, row in enumerate(exact) for j in row)
    # The first negative is the best-scoring photo of another product.
    scores = vectors @ vectors.T
    scores[labels[:, None] == labels[None, :]] = -np.inf
    assert [row[0] for row in exact] == list(np.argmax(scores, axis=1))


def _make_triplets_by_lists(labels, rows, rng, negatives):
    """The former make_triplets, which built each candidate list (and ``set(rows)`` for
    every element: quadratic): the reference the linear one must reproduce."""
    by_label: dict[object, list[int]] = {}
    for row in rows:
        by_label.setdefault(labels[row], []).append(row)
    triplets = []
    for row in rows:
        others = [r for r in by_label[labels[row]] if r != row]
        positive = rng.choice(others) if others else -1
        pool = [r for r in negatives[row] if r in set(rows)] or [
            r for r in rows if labels[r] != labels[row]
        ]
        if pool:
            triplets.append((row, positive, rng.choice(pool)))
    return triplets


@pytest.mark.parametrize("seed", range(6))
def test_make_triplets_draws_what_the_list_building_version_drew(seed: int) -> None:
    """Same seed → same triplets, on shuffled rows with singletons (mirror positives),
    mined negatives partly or wholly outside ``rows`` (the fallback draw) and one label
    alone (no negative at all)."""
    gen = np.random.default_rng(seed)
    singles = [f"s{i}" for i in range(6)]  # one photo each: mirror positives
    labels = np.array(singles + [f"p{int(v)}" for v in gen.integers(0, 9, size=74)])
    rows = [*range(6), *(int(r) for r in 6 + gen.permutation(74)[:44])]
    gen.shuffle(rows)
    negatives = [
        [int(v) for v in gen.integers(0, 80, size=int(gen.integers(0, 4)))] for _ in labels
    ]
    expected = _make_triplets_by_lists(labels, rows, random.Random(seed), negatives)
    assert make_triplets(labels, rows, random.Random(seed), negatives) == expected
    assert any(p == -1 for _, p, _ in expected) and len(expected) == len(rows)
    lonely = [r for r in rows if labels[r] == labels[rows[0]]]
    assert make_triplets(labels, lonely, random.Random(seed), negatives) == (
        _make_triplets_by_lists(labels, lonely, random.Random(seed), negatives)
    )


def test_batch_hard_and_semi_hard_re_mine_each_anchors_negative() -> None:
    sims = torch.tensor([[0.9, 0.8, 0.5, 0.3], [0.2, 0.95, 0.7, 0.1], [0.3, 0.2, 0.1, 0.06]])
    other = torch.tensor([[False, True, True, True], [True, False, True, True], [True] * 4])
    sim_pos = torch.tensor([0.6, 0.9, 0.05])
    hard = hardest_negatives(sims, other, sim_pos, semi_hard=False)
    # Row 0: its own product (0.9) is never a negative; the hardest other is 0.8.
    assert hard.tolist() == pytest.approx([0.8, 0.7, 0.3])
    semi = hardest_negatives(sims, other, sim_pos, semi_hard=True)
    # Below the positive: 0.5 (< 0.6), 0.7 (< 0.9); none below 0.05: the hardest, 0.3.
    assert semi.tolist() == pytest.approx([0.5, 0.7, 0.3])


def test_every_anchor_gets_its_mirror_as_a_second_positive() -> None:
    triplets = [(0, 1, 5), (2, -1, 6), (3, 4, 7)]
    assert with_mirror_positives(triplets) == [*triplets, (0, -1, 5), (3, -1, 7)]


def test_angle_loss_on_hand_computed_cases() -> None:
    pos = torch.tensor([np.cos(np.radians(10.0)), np.cos(np.radians(30.0))])
    neg = torch.tensor([np.cos(np.radians(50.0)), np.cos(np.radians(32.0))])
    # max(0, 5 + ∠pos − ∠neg): max(0, 5 + 10 − 50) = 0, max(0, 5 + 30 − 32) = 3
    assert angle_hinge_loss(pos, neg, 5.0).item() == pytest.approx(1.5, abs=1e-3)


def test_deeper_head_starts_as_the_identity_and_keeps_the_shape() -> None:
    maps = torch.from_numpy(np.random.default_rng(2).normal(size=(5, 16, 3, 3)).astype("f4"))
    net = ProjectionNet(16, hidden=8)
    assert net(maps).shape == maps.shape
    np.testing.assert_allclose(net(maps).detach().numpy(), maps.numpy(), atol=1e-6)
    vectors = embed(net, maps)
    assert torch.allclose((vectors * vectors).sum(1), torch.ones(5), atol=1e-5)
    # A trained branch changes the map: the head is more than the 1×1 projection.
    with torch.no_grad():
        net.branch[2].weight.normal_()
    assert not torch.allclose(net(maps), maps, atol=1e-3)
    # The seed's network is the head without the branch: its state dict has conv.* only.
    assert set(ProjectionNet(16).state_dict()) == {"conv.weight", "conv.bias"}


def test_three_disjoint_product_sets_and_the_scored_ones_never_steer_training() -> None:
    """Train, validation and scored products are disjoint; replacing every scored photo by
    noise changes neither the epochs nor the kept model (stopping never saw them)."""
    rng = np.random.default_rng(0)
    labels = np.array([f"p{i}" for i in range(16) for _ in range(3)])
    maps = rng.normal(size=(16, 8, 2, 2))[np.arange(48) // 3] + rng.normal(size=(48, 8, 2, 2))
    maps = maps.astype(np.float32)
    config = DeepRankingConfig(max_epochs=4, patience=4, learning_rate=1e-2, batch_size=8)
    split = held_out_split(labels, config, ["p0", "p1", "p2", "p3"])
    validation = validation_split(labels, split, config)
    train = ~split & ~validation
    sets = [set(labels[mask]) for mask in (train, validation, split)]
    assert sets[2] == {"p0", "p1", "p2", "p3"} and all(sets)
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    first = fit_held_out(maps, labels, split, config=config)
    noisy = maps.copy()
    noisy[split] = rng.normal(size=noisy[split].shape) * 5
    second = fit_held_out(noisy, labels, split, config=config)
    assert np.array_equal(first.validation, validation)
    assert [(e.train_loss, e.test_loss, e.test_accuracy) for e in first.trained.history] == [
        (e.train_loss, e.test_loss, e.test_accuracy) for e in second.trained.history
    ]
    assert first.trained.best_epoch == second.trained.best_epoch
    for name, value in first.trained.net.state_dict().items():
        assert torch.equal(value, second.trained.net.state_dict()[name]), name


def test_by_default_a_batch_re_mines_a_negative_harder_than_the_mined_one() -> None:
    """Both anchors' mined negative (row 2) is far, but the other triplet's photos (another
    product) sit next to each anchor: the default training re-mines them (a loss), the
    once-mined negatives alone see nothing to fix."""
    from tiefvision_core.similarity.deep_ranking import _batch_loss

    basis = np.eye(4, dtype=np.float32)
    near = basis[0] + 0.05 * basis[2]  # product c, close to product a
    maps = np.stack([basis[0], basis[0], basis[1], near, near + 0.01 * basis[3]])
    maps = maps[:, :, None, None]  # 5 photos, 4 channels, a 1×1 grid
    labels = np.array(["a", "a", "b", "c", "c"])
    batch = [(0, 1, 2), (4, 3, 2)]
    net = ProjectionNet(4)
    default = DeepRankingConfig()
    fixed = _batch_loss(net, maps, None, labels, batch, replace(default, mining="fixed")).item()
    assert fixed == pytest.approx(0.0, abs=1e-6)
    assert _batch_loss(net, maps, None, labels, batch, default).item() > 0.04


def test_by_default_stopping_ranks_epochs_by_validation_map10() -> None:
    """The stopping score is the validation products' mAP@10 (what is scored), not the
    share of a few mined triplets, which saturates on a small validation set."""
    from tiefvision_core.similarity.retrieval import ranked_neighbours, retrieval_scores

    rng = np.random.default_rng(5)
    labels = np.array([f"p{i // 3}" for i in range(36)])
    maps = rng.normal(size=(12, 8, 2, 2))[np.arange(36) // 3] + rng.normal(size=(36, 8, 2, 2))
    maps = maps.astype(np.float32)
    config = DeepRankingConfig(max_epochs=2, patience=2, batch_size=8)
    validation_rows = list(range(24, 36))
    negatives = mine_negatives(similarity_vectors(maps), labels, 3)
    triplets = make_triplets(labels, validation_rows, random.Random(0), negatives)
    result = train_projection(
        maps,
        labels,
        list(range(24)),
        triplets,
        negatives=negatives,
        config=config,
        validation_rows=validation_rows,
    )
    identity = similarity_vectors(maps[validation_rows])
    expected = retrieval_scores(ranked_neighbours(identity, 10), labels[validation_rows])
    assert result.unsupervised_accuracy == expected.map_at_10
    assert (
        result.unsupervised_accuracy != triplet_accuracy(ProjectionNet(8), maps, None, triplets)[0]
    )


def test_group_negatives_are_other_products_of_the_same_group_among_the_given_rows() -> None:
    labels = np.array(["a1", "a1", "a2", "b1", "b2", "a3", "c1"])
    groups = np.array(["A", "A", "A", "B", "B", "A", None], dtype=object)
    rows = [0, 1, 2, 3, 4, 6]  # row 5 (a3) is on another side of the split
    picked = group_negatives(labels, groups, rows, per_anchor=5, seed=0)
    assert sorted(picked[0]) == [2] and sorted(picked[1]) == [2]
    assert sorted(picked[2]) == [0, 1]
    assert picked[3] == [4] and picked[4] == [3]
    assert 6 not in picked and 5 not in picked  # no group; not among the rows
    assert all(len(v) <= 1 for v in group_negatives(labels, groups, rows, 1, 0).values())
