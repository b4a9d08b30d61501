"""Which photos train Deep Ranking against which: the product split, mined and same-group
negatives, and the (H, H+, H−) triplets.

Why apart from the network (``deep_ranking``): these choices decide what training may see —
the scored products are kept out here, and only here — and they are plain row arithmetic
that a test can check without training anything.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tiefvision_core.similarity.deep_ranking import DeepRankingConfig

__all__ = [
    "group_negatives",
    "held_out_split",
    "make_triplets",
    "mine_each_side",
    "mine_negatives",
    "split_products",
    "validation_split",
    "with_mirror_positives",
]


def split_products(products: Iterable[str], test_fraction: float, seed: int) -> set[str]:
    """The held-out products (seeded; at least one when there are two or more)."""
    unique = sorted(set(products))
    random.Random(hashlib.sha256(f"{seed}".encode()).digest()).shuffle(unique)
    n_test = max(1, round(len(unique) * test_fraction)) if len(unique) >= 2 else 0
    return set(unique[:n_test])


def mine_negatives(
    vectors: np.ndarray,
    labels: np.ndarray,
    per_anchor: int,
    *,
    neighbours: Callable[[np.ndarray, int], np.ndarray] | None = None,
    block: int = 1024,
) -> list[list[int]]:
    """For each row, the ``per_anchor`` rows of other labels that rank highest by inner
    product: the unsupervised space's most confusing wrong answers.

    ``neighbours(queries, k)`` → (len(queries), k) row numbers (−1 = none) is the current
    index answering for the same rows (what a big catalog uses); without it the rows are
    scanned exactly, ``block`` queries at a time so memory stays O(block · N).
    """
    labels = np.asarray(labels)
    out: list[list[int]] = []
    gallery = None if neighbours is not None else np.asarray(vectors, np.float32)
    for start in range(0, len(vectors), block):
        queries = np.asarray(vectors[start : start + block], np.float32)
        if gallery is None:
            assert neighbours is not None
            found = neighbours(queries, min(len(vectors), per_anchor * 4 + 8))
        else:
            scores = queries @ gallery.T
            found = np.argsort(-scores, axis=1)[:, : per_anchor * 4 + 8]
        for offset, rows in enumerate(found):
            own = labels[start + offset]
            picked = [int(r) for r in rows if r >= 0 and labels[r] != own]
            out.append(picked[:per_anchor])
    return out


def group_negatives(
    labels: np.ndarray, groups: np.ndarray, rows: Sequence[int], per_anchor: int, seed: int
) -> dict[int, list[int]]:
    """For each of ``rows``, up to ``per_anchor`` other ``rows`` of the same group (a
    metadata value) but another label, drawn seeded: a carton of the same brand in another
    flavour is the negative a shopper confuses. Empty groups (None, "", NaN) give none."""
    rng = random.Random(seed)
    members: dict[str, list[int]] = {}
    for row in rows:
        group = groups[row]
        if group is not None and group == group and str(group) != "":
            members.setdefault(str(group), []).append(int(row))
    out: dict[int, list[int]] = {}
    for rows_of_group in members.values():
        for row in rows_of_group:
            others = [r for r in rows_of_group if labels[r] != labels[row]]
            out[row] = rng.sample(others, min(per_anchor, len(others)))
    return out


def make_triplets(
    labels: np.ndarray, rows: Sequence[int], rng: random.Random, negatives: list[list[int]]
) -> list[tuple[int, int, int]]:
    """One (anchor, positive, negative) per anchor in ``rows``: positive = another photo of
    the product (−1 = the anchor mirrored when it has none), negative from ``negatives``
    (those among ``rows``), else any photo of ``rows`` of another product.

    Linear in ``len(rows)``: each random pick indexes the list it draws from instead of
    building it (``rng.randrange(n)`` draws what ``rng.choice`` of an n-list does, so the
    triplets of a seed are the ones the former list-building version gave)."""
    rows = [int(r) for r in rows]
    members = set(rows)
    label_of = dict(zip(rows, np.asarray(labels)[rows].tolist(), strict=True))
    by_label: dict[object, list[int]] = {}  # rows of each label, in ``rows`` order
    place: dict[int, int] = {}  # row → its index in its label's list
    shifted: dict[object, list[int]] = {}  # label → position in rows − its rank (sorted)
    for position, row in enumerate(rows):
        own = by_label.setdefault(label_of[row], [])
        shifted.setdefault(label_of[row], []).append(position - len(own))
        place[row] = len(own)
        own.append(row)
    triplets = []
    for row in rows:
        own = by_label[label_of[row]]
        positive = -1
        if len(own) > 1:  # the k-th of the label's rows other than ``row``
            k = rng.randrange(len(own) - 1)
            positive = own[k + (k >= place[row])]
        pool = [r for r in negatives[row] if r in members]
        if pool:
            triplets.append((row, positive, rng.choice(pool)))
        elif len(rows) > len(own):  # the k-th row of another label, in ``rows`` order
            k = rng.randrange(len(rows) - len(own))
            triplets.append(
                (row, positive, rows[k + bisect.bisect_right(shifted[label_of[row]], k)])
            )
    return triplets


def with_mirror_positives(
    triplets: Sequence[tuple[int, int, int]],
) -> list[tuple[int, int, int]]:
    """The triplets plus, for every one whose positive is another photo, the same anchor
    and negative with the anchor's mirror (−1) as the positive."""
    return [*triplets, *((a, -1, n) for a, p, n in triplets if p >= 0)]


def _check_sides(labels: np.ndarray, sides: dict[str, np.ndarray]) -> None:
    if any(len(set(labels[mask])) < 2 for mask in sides.values()):
        counts = ", ".join(f"{len(set(labels[m]))} {name}" for name, m in sides.items())
        raise ValueError(
            f"Deep Ranking needs at least 2 products on each side of the split ({counts}); "
            f"the catalog has {len(set(labels))} products: add products or lower the test "
            f"or validation fraction"
        )


def held_out_split(
    labels: np.ndarray,
    config: DeepRankingConfig,
    test_products: Collection[str] | None = None,
) -> np.ndarray:
    """Row mask of the scored (held-out) products: ``test_products`` when given (a bench
    fixes them), else a seeded ``test_fraction`` of the products; refuses a split with
    < 2 products on a side."""
    labels = np.asarray(labels)
    held_out = (
        {str(p) for p in test_products}
        if test_products is not None
        else split_products(labels, config.test_fraction, config.seed)
    )
    split = np.array([label in held_out for label in labels])
    _check_sides(labels, {"train": ~split, "held-out": split})
    return split


def validation_split(labels: np.ndarray, split: np.ndarray, config: DeepRankingConfig):
    """Row mask of the validation products: a seeded ``validation_fraction`` of the
    products *outside* ``split`` (the scored ones), so stopping never sees a scored photo;
    refuses a split that leaves < 2 products to train or to validate on."""
    labels = np.asarray(labels)
    chosen = split_products(labels[~split], config.validation_fraction, config.seed + 1)
    validation = np.array([label in chosen for label in labels]) & ~split
    _check_sides(labels, {"train": ~split & ~validation, "validation": validation})
    return validation


def mine_each_side(
    vectors: np.ndarray,
    labels: np.ndarray,
    sides: Sequence[Sequence[int]],
    config: DeepRankingConfig,
    neighbours: Callable[[np.ndarray, int], np.ndarray] | None,
) -> list[list[int]]:
    """Negatives mined among each side's own photos only (train, validation, scored), so
    the photos of one side never take the place of another's: training and stopping are
    the same whatever the scored photos are. Through ``neighbours`` (an index over the
    whole catalog) the rows of other sides are dropped from its answers."""
    negatives: list[list[int]] = [[] for _ in range(len(labels))]
    for rows in sides:
        rows = list(rows)
        local = None
        if neighbours is not None:
            to_local = np.full(len(labels), -1, np.int64)
            to_local[rows] = np.arange(len(rows))

            def local(queries: np.ndarray, k: int, to_local=to_local) -> np.ndarray:
                found = neighbours(queries, k)
                return np.where(found >= 0, to_local[np.maximum(found, 0)], -1)

        mined = mine_negatives(
            vectors[rows], labels[rows], config.mined_negatives, neighbours=local
        )
        for row, picked in zip(rows, mined, strict=True):
            negatives[row] = [rows[j] for j in picked]
    return negatives
