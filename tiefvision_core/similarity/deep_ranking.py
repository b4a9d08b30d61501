"""Deep Ranking: a projection of the grid encodings trained on triplets (H, H+, H−) so that
sim(H, H+) beats sim(H, H−) by a margin.

* The network is the seed's: a 1×1 convolution over the encoder's channels, initialised to
  the identity, so before training it *is* the unsupervised space (a test checks the
  rankings are equal) and training can only start from there.
* Similarity in both spaces is the same function: per-position L2 normalisation, mean of
  cosines over the grid (``similarity.similarity_vectors``), so one index code serves both.
* Loss: ``max(0, margin − sim(H, H+) + sim(H, H−))`` on normalised outputs.
* Triplets: H+ = another view of the same product (the catalog's ``product_id``) or H
  mirrored (free); H− = another product, mined where the *unsupervised* space ranks it too
  high (the errors worth fixing), plus the hardest other product in the batch. Annotated
  triplets from the database join the training set.
* Held-out: whole products (all their photos) are kept out of training; early stopping and
  the reported accuracy use triplets among them only.
"""

from __future__ import annotations

import bisect
import copy
import hashlib
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

__all__ = [
    "DeepRankingConfig",
    "EpochReport",
    "HeldOutFit",
    "ProjectionNet",
    "TrainedProjection",
    "fit_held_out",
    "held_out_split",
    "hinge_loss",
    "make_triplets",
    "mine_negatives",
    "split_products",
    "train_projection",
    "triplet_accuracy",
]


class ProjectionNet(nn.Module):
    """1×1 convolution C → C initialised to the identity (the seed's network)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
            bias = self.conv.bias
            assert bias is not None  # Conv2d's default bias=True: typed Optional for bias=False
            bias.zero_()

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.conv(maps)


def embed(net: nn.Module, maps: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, H·W·C) unit vectors whose inner product is the mean cosine."""
    out = net(maps)
    n, _, h, w = out.shape
    out = out / out.norm(dim=1, keepdim=True).clamp_min(1e-6) / (h * w) ** 0.5
    return out.permute(0, 2, 3, 1).reshape(n, -1)


def hinge_loss(sim_pos: torch.Tensor, sim_neg: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean of ``max(0, margin − sim(H, H+) + sim(H, H−))``."""
    return torch.clamp(margin - sim_pos + sim_neg, min=0).mean()


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
    for start in range(0, len(vectors), block):
        queries = np.asarray(vectors[start : start + block], np.float32)
        if neighbours is not None:
            found = neighbours(queries, min(len(vectors), per_anchor * 4 + 8))
        else:
            scores = queries @ np.asarray(vectors, np.float32).T
            found = np.argsort(-scores, axis=1)[:, : per_anchor * 4 + 8]
        for offset, rows in enumerate(found):
            own = labels[start + offset]
            picked = [int(r) for r in rows if r >= 0 and labels[r] != own]
            out.append(picked[:per_anchor])
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


@dataclass(frozen=True)
class DeepRankingConfig:
    margin: float = 0.1
    max_epochs: int = 30
    patience: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    mined_negatives: int = 10
    test_fraction: float = 0.25
    seed: int = 0


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    train_loss: float
    test_loss: float
    test_accuracy: float
    seconds: float


@dataclass
class TrainedProjection:
    net: ProjectionNet
    unsupervised_accuracy: float
    history: list[EpochReport] = field(default_factory=list)
    best_epoch: int = 0  # 0: no epoch beat the identity, which is kept
    best_accuracy: float = 0.0

    def metrics(self) -> list[dict[str, float]]:
        return [asdict(e) for e in self.history]


def _tensor(maps: np.ndarray, rows: Sequence[int], flipped: np.ndarray | None) -> torch.Tensor:
    """Maps of ``rows``; row −k−1 means the mirror of row k (stored flip when present,
    else the map mirrored along its width)."""
    out = []
    for r in rows:
        if r >= 0:
            out.append(torch.from_numpy(np.asarray(maps[r], np.float32)))
        elif flipped is not None:
            out.append(torch.from_numpy(np.asarray(flipped[-r - 1], np.float32)))
        else:
            out.append(torch.from_numpy(np.asarray(maps[-r - 1], np.float32)).flip(-1))
    return torch.stack(out)


def _similarities(net, maps, flipped, triplets) -> tuple[torch.Tensor, torch.Tensor]:
    anchors = embed(net, _tensor(maps, [a for a, _, _ in triplets], flipped))
    positives = embed(
        net, _tensor(maps, [p if p >= 0 else -a - 1 for a, p, _ in triplets], flipped)
    )
    negatives = embed(net, _tensor(maps, [n for _, _, n in triplets], flipped))
    return (anchors * positives).sum(1), (anchors * negatives).sum(1)


@torch.no_grad()
def triplet_accuracy(net, maps, flipped, triplets, margin: float = 0.1) -> tuple[float, float]:
    """(share with sim(H, H+) > sim(H, H−), mean hinge loss at ``margin``)."""
    if not triplets:
        return 0.0, 0.0
    net.eval()
    pos, neg = _similarities(net, maps, flipped, triplets)
    return float((pos > neg).float().mean()), float(hinge_loss(pos, neg, margin))


def train_projection(
    maps: np.ndarray,
    labels: np.ndarray,
    train_rows: Sequence[int],
    test_triplets: list[tuple[int, int, int]],
    *,
    flipped: np.ndarray | None = None,
    negatives: list[list[int]],
    extra_triplets: Sequence[tuple[int, int, int]] = (),
    config: DeepRankingConfig | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainedProjection:
    """Train the projection; keep the epoch with the best held-out triplet accuracy."""
    config = config or DeepRankingConfig()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    net = ProjectionNet(maps.shape[1])
    before, _ = triplet_accuracy(net, maps, flipped, test_triplets)
    result = TrainedProjection(net, before)
    _, before_loss = triplet_accuracy(net, maps, flipped, test_triplets, config.margin)
    best = ((before, -before_loss), copy.deepcopy(net.state_dict()))
    optimiser = torch.optim.Adam(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    for epoch in range(1, config.max_epochs + 1):
        started = time.perf_counter()
        net.train()
        triplets = make_triplets(labels, train_rows, rng, negatives) + list(extra_triplets)
        rng.shuffle(triplets)
        total = 0.0
        for start in range(0, len(triplets), config.batch_size):
            batch = triplets[start : start + config.batch_size]
            pos, neg = _similarities(net, maps, flipped, batch)
            loss = hinge_loss(pos, neg, config.margin)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        accuracy, test_loss = triplet_accuracy(net, maps, flipped, test_triplets, config.margin)
        report = EpochReport(
            epoch,
            round(total / max(1, len(triplets)), 5),
            round(test_loss, 5),
            round(accuracy, 4),
            round(time.perf_counter() - started, 2),
        )
        result.history.append(report)
        if on_epoch:
            on_epoch(report)
        if (accuracy, -test_loss) > best[0]:  # accuracy first, held-out loss breaks ties
            best = ((accuracy, -test_loss), copy.deepcopy(net.state_dict()))
            result.best_epoch = epoch
        elif epoch - result.best_epoch >= config.patience:
            break
    net.load_state_dict(best[1])
    net.eval()
    result.best_accuracy = best[0][0]
    return result


@dataclass
class HeldOutFit:
    """A projection trained with whole products held out, and how both spaces rank them."""

    trained: TrainedProjection
    test_triplets: list[tuple[int, int, int]]
    unsupervised_map10: float
    supervised_map10: float


def held_out_split(labels: np.ndarray, config: DeepRankingConfig) -> np.ndarray:
    """Row mask of the held-out products; refuses a split with < 2 products on a side."""
    held_out = split_products(labels, config.test_fraction, config.seed)
    split = np.array([label in held_out for label in labels])
    if len(set(labels[~split])) < 2 or len(set(labels[split])) < 2:
        raise ValueError(
            f"Deep Ranking needs at least 2 products on each side of the split; the catalog "
            f"has {len(set(labels))} products: add products or lower the test fraction"
        )
    return split


def fit_held_out(
    maps: np.ndarray,
    labels: np.ndarray,
    split: np.ndarray,
    *,
    flipped: np.ndarray | None = None,
    config: DeepRankingConfig | None = None,
    neighbours: Callable[[np.ndarray, int], np.ndarray] | None = None,
    extra_train: Sequence[tuple[int, int, int]] = (),
    extra_test: Sequence[tuple[int, int, int]] = (),
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> HeldOutFit:
    """Mine negatives in the unsupervised space, train on the products outside ``split``,
    stop early on triplets among the held-out ones, and score both spaces there (mAP@10,
    same product = relevant)."""
    from tiefvision_core.similarity.retrieval import ranked_neighbours, retrieval_scores
    from tiefvision_core.similarity.unsupervised import similarity_vectors

    config = config or DeepRankingConfig()
    train_rows = [int(i) for i in np.flatnonzero(~split)]
    test_rows = [int(i) for i in np.flatnonzero(split)]
    unsupervised = similarity_vectors(maps)
    negatives = mine_negatives(unsupervised, labels, config.mined_negatives, neighbours=neighbours)
    test_triplets = make_triplets(labels, test_rows, random.Random(config.seed + 1), negatives)
    test_triplets += list(extra_test)
    trained = train_projection(
        maps,
        labels,
        train_rows,
        test_triplets,
        flipped=flipped,
        negatives=negatives,
        extra_triplets=extra_train,
        config=config,
        on_epoch=on_epoch,
    )
    with torch.no_grad():
        supervised = embed(trained.net, torch.from_numpy(np.asarray(maps[test_rows], np.float32)))

    def map10(vectors: np.ndarray) -> float:
        return retrieval_scores(ranked_neighbours(vectors, 10), labels[test_rows]).map_at_10

    return HeldOutFit(
        trained, test_triplets, map10(unsupervised[test_rows]), map10(supervised.numpy())
    )
