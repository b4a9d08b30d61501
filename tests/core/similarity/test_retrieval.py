"""Retrieval metrics: exact neighbours and hand-computed P@1, P@5, mAP@10."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tiefvision_core.similarity.retrieval import ranked_neighbours, retrieval_scores


def _unit(degrees: list[float]) -> np.ndarray:
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def test_ranked_neighbours_excludes_self_and_orders_by_score() -> None:
    # Scores are cosines of the angle differences, so the order is known by hand.
    vectors = _unit([0, 10, 35, 80, 170])
    expected = np.array(
        [
            [1, 2, 3, 4],  # 0°: 10, 35, 80, 170 away
            [0, 2, 3, 4],  # 10°: 10, 25, 70, 160
            [1, 0, 3, 4],  # 35°: 25, 35, 45, 135
            [2, 1, 0, 4],  # 80°: 45, 70, 80, 90
            [3, 2, 1, 0],  # 170°: 90, 135, 160, 170
        ]
    )
    np.testing.assert_array_equal(ranked_neighbours(vectors, 4), expected)
    np.testing.assert_array_equal(ranked_neighbours(vectors, 2), expected[:, :2])
    # Asking for more than exist gives every other row, never the row itself.
    everything = ranked_neighbours(vectors, 10)
    np.testing.assert_array_equal(everything, expected)
    assert not (everything == np.arange(5)[:, None]).any()


def test_ranked_neighbours_excludes_self_even_when_a_longer_vector_scores_higher() -> None:
    # Row 0's own score (1) is below row 1's (3): still never its own neighbour.
    vectors = np.array([[1.0, 0.0], [3.0, 0.0], [0.6, 0.8]], np.float32)
    np.testing.assert_array_equal(ranked_neighbours(vectors, 2), [[1, 2], [0, 2], [1, 0]])


def test_retrieval_scores_match_a_hand_computed_case() -> None:
    # A: rows 0-3, B: rows 4-6, C: rows 7-10, D: row 11 alone (skipped: nothing to find).
    labels = np.array(list("AAAABBBCCCCD"))

    def perfect(row: int) -> list[int]:
        same = [r for r in range(12) if labels[r] == labels[row] and r != row]
        return same + [r for r in range(12) if labels[r] != labels[row]]

    neighbours = np.array(
        [
            [1, 4, 2, 5, 6, 3, 7, 8, 9, 10, 11],  # A: relevant at 1, 3, 6
            [4, 5, 6, 7, 8, 9, 10, 11, 0, 2, 3],  # A: relevant at 9, 10, 11
            perfect(2),
            perfect(3),
            [5, 0, 6, 1, 2, 3, 7, 8, 9, 10, 11],  # B: relevant at 1, 3
            [0, 1, 2, 3, 7, 8, 9, 10, 11, 4, 6],  # B: relevant at 10, 11
            perfect(6),
            *(perfect(row) for row in range(7, 11)),
            list(range(11)),  # D: no other member
        ]
    )
    assert sorted(neighbours[0]) == [r for r in range(12) if r != 0]
    scores = retrieval_scores(neighbours, labels)

    f = Fraction
    p1 = [1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1]
    p5 = [f(2, 5), 0, f(3, 5), f(3, 5), f(2, 5), 0, f(2, 5), *[f(3, 5)] * 4]
    ap = [
        (1 + f(2, 3) + f(3, 6)) / 3,
        (f(1, 9) + f(2, 10)) / 3,  # the third hit is at 11, beyond the top 10
        1,
        1,
        (1 + f(2, 3)) / 2,
        f(1, 10) / 2,
        1,
        1,
        1,
        1,
        1,
    ]
    assert scores.queries == 11
    assert scores.precision_at_1 == round(float(f(sum(p1), 11)), 4) == 0.8182
    assert scores.precision_at_5 == round(float(sum(p5) / 11), 4) == 0.4364
    assert scores.map_at_10 == round(float(sum(ap) / 11), 4) == 0.7918
    assert scores.as_dict() == {
        "queries": 11,
        "precision_at_1": 0.8182,
        "precision_at_5": 0.4364,
        "map_at_10": 0.7918,
    }


def test_a_perfect_ranking_scores_one_everywhere() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 32))
    labels = np.repeat(np.arange(4), 7)  # 6 others each: P@5 can reach 1
    vectors = centres[labels] + 0.01 * rng.normal(size=(len(labels), 32))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    neighbours = ranked_neighbours(vectors, 10)
    assert (labels[neighbours[:, :6]] == labels[:, None]).all()
    scores = retrieval_scores(neighbours, labels)
    assert scores.queries == 28
    assert scores.precision_at_1 == 1.0
    assert scores.precision_at_5 == 1.0
    assert scores.map_at_10 == 1.0


def test_a_shuffled_ranking_scores_below_one() -> None:
    labels = np.repeat(np.arange(4), 7)
    rng = np.random.default_rng(4)
    neighbours = np.array(
        [rng.permutation([r for r in range(28) if r != row])[:10] for row in range(28)]
    )
    scores = retrieval_scores(neighbours, labels)
    assert scores.map_at_10 < 0.6
    assert scores.precision_at_1 < 1.0


@pytest.mark.parametrize("k", [1, 3])
def test_shallow_neighbour_lists_use_what_there_is(k: int) -> None:
    labels = np.array([0, 0, 1, 1])
    neighbours = np.array([[1, 2, 3], [2, 0, 3], [3, 0, 1], [0, 1, 2]])[:, :k]
    scores = retrieval_scores(neighbours, labels)
    assert scores.queries == 4
    assert scores.precision_at_1 == 0.5
    # One relevant item each: AP = 1/rank of it when within the list.
    expected_ap = {1: (1 + 0 + 1 + 0) / 4, 3: (1 + 1 / 2 + 1 + 1 / 3) / 4}[k]
    assert scores.map_at_10 == round(expected_ap, 4)


def test_per_query_figures_average_to_the_scores() -> None:
    from tiefvision_core.similarity.retrieval import per_query

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 4)
    labels = np.append(labels, 99)  # a product with one photo: nothing to find, not a query
    vectors = rng.normal(size=(len(labels), 8)) + 2 * np.eye(8)[labels % 8]
    neighbours = ranked_neighbours(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), 10)
    figures = per_query(neighbours, labels)
    scores = retrieval_scores(neighbours, labels)
    assert len(figures.labels) == scores.queries == len(labels) - 1
    assert 99 not in figures.labels and len(labels) - 1 not in figures.asked
    assert figures.ap_at_10.mean() == pytest.approx(scores.map_at_10, abs=1e-4)
    assert figures.hit_at_1.mean() == pytest.approx(scores.precision_at_1, abs=1e-4)


def test_product_interval_resamples_products_not_photos() -> None:
    """A gain carried by one product of four is noise; the same gain spread over forty
    products is not. Resampling photos would call both real."""
    from tiefvision_core.similarity.retrieval import product_interval

    photos = 10
    few = np.repeat(np.arange(4), photos)
    carried = np.where(few == 0, 0.4, 0.0)  # one product gains 0.4, the others nothing
    low, high = product_interval(carried, few)
    assert low <= carried.mean() <= high and low <= 0.0 < high
    many = np.repeat(np.arange(40), photos)
    spread = np.full(len(many), 0.1) + np.random.default_rng(1).normal(0, 0.05, len(many))
    low, high = product_interval(spread, many)
    assert 0.0 < low <= spread.mean() <= high
    assert product_interval(carried, few) == product_interval(carried, few)  # seeded
    with pytest.raises(ValueError, match="at least one"):
        product_interval(np.array([]), np.array([]))
