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

import copy
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from tiefvision_core.similarity.triplets import (
    group_negatives,
    make_triplets,
    mine_each_side,
    validation_split,
    with_mirror_positives,
)
from tiefvision_core.similarity.whitening import fit_whitening

__all__ = [
    "DeepRankingConfig",
    "EpochReport",
    "HeldOutFit",
    "ProjectionNet",
    "TrainedProjection",
    "angle_hinge_loss",
    "fit_held_out",
    "hardest_negatives",
    "hinge_loss",
    "space_vectors",
    "train_projection",
    "triplet_accuracy",
    "triplet_loss",
    "unsupervised_vectors",
]


class ProjectionNet(nn.Module):
    """1×1 convolution C → C initialised to the identity (the seed's network), optionally
    followed by a residual 1×1 → ReLU → 1×1 of ``hidden`` channels (the deeper head).

    The residual branch's last convolution starts at zero, so the deeper head too *is* the
    unsupervised space before training. ``hidden=0`` is the seed's network, whose state dict
    (``conv.*`` only) models saved before the deeper head load into unchanged."""

    def __init__(self, channels: int, hidden: int = 0) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(channels, channels, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
            bias = self.conv.bias
            assert bias is not None  # Conv2d's default bias=True: typed Optional for bias=False
            bias.zero_()
        self.branch: nn.Sequential | None = None
        if hidden:
            self.branch = nn.Sequential(
                nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1)
            )
            with torch.no_grad():
                last = self.branch[2]
                assert isinstance(last, nn.Conv2d) and last.bias is not None
                last.weight.zero_()
                last.bias.zero_()

    def start_from(self, weight: np.ndarray, bias: np.ndarray) -> None:
        """Make the 1×1 convolution ``weight @ x + bias`` (e.g. a whitening)."""
        channels = self.conv.in_channels
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(weight).view(channels, channels, 1, 1))
            assert self.conv.bias is not None
            self.conv.bias.copy_(torch.from_numpy(bias))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        out = self.conv(maps)
        return out if self.branch is None else out + self.branch(out)


def embed(net: nn.Module, maps: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, H·W·C) unit vectors whose inner product is the mean cosine."""
    out = net(maps)
    n, _, h, w = out.shape
    out = out / out.norm(dim=1, keepdim=True).clamp_min(1e-6) / (h * w) ** 0.5
    return out.permute(0, 2, 3, 1).reshape(n, -1)


def hinge_loss(sim_pos: torch.Tensor, sim_neg: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean of ``max(0, margin − sim(H, H+) + sim(H, H−))``."""
    return torch.clamp(margin - sim_pos + sim_neg, min=0).mean()


@dataclass(frozen=True)
class DeepRankingConfig:
    """Training settings. The defaults are the ones measured best on held-out products
    (``bench/similarity.py``, ``docs/benchmarks.md``); the others stay selectable so the
    comparison can be rerun.

    * ``validation_fraction``: share of the *training* products (never of the scored ones)
      whose triplets decide early stopping.
    * ``mining``: ``fixed`` = the negatives mined once in the unsupervised space;
      ``batch-hard`` / ``semi-hard`` = each anchor's negative re-chosen in every batch with
      the current model: the most similar photo of another product in the batch (semi-hard:
      the most similar one still below the positive, else the most similar).
    * ``mirror_positives``: every anchor's mirror is a positive too (one more triplet each).
    * ``hidden``: 0 = the seed's 1×1 projection; > 0 = plus a residual 1×1 → ReLU → 1×1.
    * ``loss``: ``cosine`` = hinge on similarities at ``margin``; ``angle`` = the seed's
      hinge on angles (degrees) at ``margin_degrees``.
    * ``stop_on``: ``triplets`` = validation triplet accuracy (loss breaks ties);
      ``map10`` = validation mAP@10 (same product = relevant) over at most
      ``validation_queries`` photos.
    * ``group_negatives``: with a group per photo (a metadata column: category, brand),
      up to this many photos of the *same group* but another product join each training
      anchor's negatives (issue 30, item 4); 0 = none.
    * ``init``: ``identity`` = training starts from the unsupervised space (the seed);
      ``whitened`` = from the whitening (``similarity/whitening.py``, ``whitening_shrink``)
      learned without labels from every photo that is not scored (issue 30, item 1).
    """

    margin: float = 0.1
    max_epochs: int = 30
    patience: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    mined_negatives: int = 10
    test_fraction: float = 0.25
    seed: int = 0
    validation_fraction: float = 0.25
    mining: Literal["fixed", "batch-hard", "semi-hard"] = "batch-hard"
    mirror_positives: bool = False
    hidden: int = 0
    loss: Literal["cosine", "angle"] = "cosine"
    margin_degrees: float = 5.0
    stop_on: Literal["triplets", "map10"] = "map10"
    validation_queries: int = 2000
    group_negatives: int = 0
    init: Literal["identity", "whitened"] = "identity"
    whitening_shrink: float = 1.0


@dataclass(frozen=True)
class EpochReport:
    """One epoch; ``test_*`` are measured on the *validation* products (the stopping set),
    never on the scored ones. ``test_accuracy`` is what stopping ranks by: triplet accuracy,
    or mAP@10 with ``stop_on="map10"``."""

    epoch: int
    train_loss: float
    test_loss: float
    test_accuracy: float
    seconds: float


@dataclass
class TrainedProjection:
    net: ProjectionNet
    unsupervised_accuracy: float  # on the stopping set, as best_accuracy
    history: list[EpochReport] = field(default_factory=list)
    best_epoch: int = 0  # 0: no epoch beat the identity, which is kept
    best_accuracy: float = 0.0

    def metrics(self) -> list[dict[str, float]]:
        return [asdict(e) for e in self.history]


def _tensor(maps: np.ndarray, rows: Sequence[int], flipped: np.ndarray | None) -> torch.Tensor:
    """Maps of ``rows`` as float32 (only these rows are converted: the catalog's maps stay
    in their stored dtype); row −k−1 means the mirror of row k (stored flip when present,
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


def _positive_rows(triplets: Sequence[tuple[int, int, int]]) -> list[int]:
    return [p if p >= 0 else -a - 1 for a, p, _ in triplets]


def _similarities(net, maps, flipped, triplets) -> tuple[torch.Tensor, torch.Tensor]:
    anchors = embed(net, _tensor(maps, [a for a, _, _ in triplets], flipped))
    positives = embed(net, _tensor(maps, _positive_rows(triplets), flipped))
    negatives = embed(net, _tensor(maps, [n for _, _, n in triplets], flipped))
    return (anchors * positives).sum(1), (anchors * negatives).sum(1)


def angle_hinge_loss(
    sim_pos: torch.Tensor, sim_neg: torch.Tensor, margin_degrees: float
) -> torch.Tensor:
    """Mean of ``max(0, margin° + ∠(H, H+) − ∠(H, H−))``, angles = arccos of the
    similarity in degrees (the seed's loss)."""
    eps = 1e-6

    def degrees(sim: torch.Tensor) -> torch.Tensor:
        return torch.rad2deg(torch.arccos(sim.clamp(-1 + eps, 1 - eps)))

    return torch.clamp(margin_degrees + degrees(sim_pos) - degrees(sim_neg), min=0).mean()


def triplet_loss(
    sim_pos: torch.Tensor, sim_neg: torch.Tensor, config: DeepRankingConfig
) -> torch.Tensor:
    """The configured training loss (``config.loss``)."""
    if config.loss == "angle":
        return angle_hinge_loss(sim_pos, sim_neg, config.margin_degrees)
    return hinge_loss(sim_pos, sim_neg, config.margin)


def hardest_negatives(
    sims: torch.Tensor, other: torch.Tensor, sim_pos: torch.Tensor, *, semi_hard: bool
) -> torch.Tensor:
    """Each anchor's negative similarity re-mined in a batch: ``sims`` (B, M) anchor ×
    candidate similarities, ``other`` (B, M) True where the candidate is another product.
    Batch-hard: the most similar other product; semi-hard: the most similar one still
    below the anchor's positive (``sim_pos``), else (none below) the most similar."""
    masked = sims.masked_fill(~other, -torch.inf)
    hardest = masked.max(dim=1).values
    if not semi_hard:
        return hardest
    below = masked.masked_fill(masked >= sim_pos.detach()[:, None], -torch.inf)
    easier = below.max(dim=1).values
    return torch.where(torch.isfinite(easier), easier, hardest)


def _batch_loss(net, maps, flipped, labels, batch, config: DeepRankingConfig) -> torch.Tensor:
    rows = [a for a, _, _ in batch]
    positive_rows = _positive_rows(batch)
    negative_rows = [n for _, _, n in batch]
    anchors = embed(net, _tensor(maps, rows, flipped))
    positives = embed(net, _tensor(maps, positive_rows, flipped))
    negatives = embed(net, _tensor(maps, negative_rows, flipped))
    sim_pos = (anchors * positives).sum(1)
    if config.mining == "fixed":
        return triplet_loss(sim_pos, (anchors * negatives).sum(1), config)
    candidates = torch.cat([anchors, positives, negatives])
    candidate_rows = rows + positive_rows + negative_rows
    own = labels[[r if r >= 0 else -r - 1 for r in rows]]
    theirs = labels[[r if r >= 0 else -r - 1 for r in candidate_rows]]
    other = torch.from_numpy(own[:, None] != theirs[None, :])
    sim_neg = hardest_negatives(
        anchors @ candidates.T, other, sim_pos, semi_hard=config.mining == "semi-hard"
    )
    return triplet_loss(sim_pos, sim_neg, config)


@torch.no_grad()
def triplet_accuracy(net, maps, flipped, triplets, margin: float = 0.1) -> tuple[float, float]:
    """(share with sim(H, H+) > sim(H, H−), mean hinge loss at ``margin``)."""
    if not triplets:
        return 0.0, 0.0
    net.eval()
    pos, neg = _similarities(net, maps, flipped, triplets)
    return float((pos > neg).float().mean()), float(hinge_loss(pos, neg, margin))


@torch.no_grad()
def space_vectors(net: nn.Module, maps: np.ndarray, rows: Sequence[int], batch: int = 256):
    """Float32 unit vectors of ``rows`` in the space of ``net``, a batch converted at a
    time."""
    net.eval()
    out = [
        embed(net, _tensor(maps, rows[i : i + batch], None)).numpy()
        for i in range(0, len(rows), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _map10(net, maps, labels: np.ndarray, rows: Sequence[int]) -> float:
    from tiefvision_core.similarity.retrieval import score_vectors

    return score_vectors(space_vectors(net, maps, rows), labels[list(rows)]).map_at_10


def _stopping_score(net, maps, flipped, labels, triplets, rows, config) -> tuple[float, float]:
    """(what stopping ranks by, the validation hinge loss) on the validation products."""
    accuracy, loss = triplet_accuracy(net, maps, flipped, triplets, config.margin)
    if config.stop_on == "map10" and len(rows) > 1:
        return _map10(net, maps, labels, rows), loss
    return accuracy, loss


def _query_sample(rows: Sequence[int], limit: int, seed: int) -> list[int]:
    """At most ``limit`` of ``rows`` (seeded): mAP@10 over them costs O(limit²)."""
    rows = [int(r) for r in rows]
    if len(rows) <= limit:
        return rows
    return sorted(random.Random(seed).sample(rows, limit))


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
    validation_rows: Sequence[int] = (),
    initial: tuple[np.ndarray, np.ndarray] | None = None,
) -> TrainedProjection:
    """Train the projection; keep the epoch that scores best on the stopping set:
    ``test_triplets`` (triplets among the validation products) and, with
    ``stop_on="map10"``, the retrieval of ``validation_rows``. Never pass the scored
    products here: what stops training is what it was tuned on. ``initial``: the first
    convolution's (weight, bias) before training (default: the identity); the kept model
    is never worse on the stopping set than this start.

    Memory: ``maps`` (and ``flipped``) stay as given (float16 or a memory map is fine);
    only a batch of rows (3 × batch_size maps) is converted to float32 at a time."""
    config = config or DeepRankingConfig()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    labels = np.asarray(labels)
    rows = _query_sample(validation_rows, config.validation_queries, config.seed)
    net = ProjectionNet(maps.shape[1], config.hidden)
    if initial is not None:  # (weight, bias) of the first 1×1 convolution, e.g. a whitening
        net.start_from(*initial)

    def score() -> tuple[float, float]:
        return _stopping_score(net, maps, flipped, labels, test_triplets, rows, config)

    before, before_loss = score()
    result = TrainedProjection(net, before)
    best = ((before, -before_loss), copy.deepcopy(net.state_dict()))
    optimiser = torch.optim.Adam(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    for epoch in range(1, config.max_epochs + 1):
        started = time.perf_counter()
        net.train()
        triplets = make_triplets(labels, train_rows, rng, negatives) + list(extra_triplets)
        if config.mirror_positives:
            triplets = with_mirror_positives(triplets)
        rng.shuffle(triplets)
        total = 0.0
        for start in range(0, len(triplets), config.batch_size):
            batch = triplets[start : start + config.batch_size]
            loss = _batch_loss(net, maps, flipped, labels, batch, config)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        accuracy, test_loss = score()
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
        if (accuracy, -test_loss) > best[0]:  # score first, validation loss breaks ties
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
    """A projection trained with whole products held out, and how both spaces rank the
    scored ones (``test_*``: products neither trained nor stopped on)."""

    trained: TrainedProjection
    test_triplets: list[tuple[int, int, int]]
    unsupervised_map10: float
    supervised_map10: float
    validation_triplets: list[tuple[int, int, int]] = field(default_factory=list)
    unsupervised_accuracy: float = 0.0  # triplet accuracy on the scored products
    supervised_accuracy: float = 0.0
    validation: np.ndarray | None = None  # row mask of the validation products


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
    validation: np.ndarray | None = None,
    extra_validation: Sequence[tuple[int, int, int]] = (),
    groups: np.ndarray | None = None,
) -> HeldOutFit:
    """Mine negatives in the unsupervised space, train on the products outside ``split``
    and ``validation`` (default :func:`validation_split`), stop early on the validation
    products, and score both spaces on the ``split`` products, which neither training nor
    stopping saw (triplet accuracy, mAP@10 with same product = relevant). ``groups``: a
    metadata value per row, for ``config.group_negatives``.

    Memory: ``maps`` / ``flipped`` may be float16 or memory-mapped; the unsupervised
    vectors are float16 ((N, H·W·C) × 2 bytes) and converted a block at a time."""
    from tiefvision_core.similarity.retrieval import score_vectors

    config = config or DeepRankingConfig()
    labels = np.asarray(labels)
    validation = validation_split(labels, split, config) if validation is None else validation
    train_rows = [int(i) for i in np.flatnonzero(~split & ~validation)]
    validation_rows = [int(i) for i in np.flatnonzero(validation)]
    test_rows = [int(i) for i in np.flatnonzero(split)]
    unsupervised = unsupervised_vectors(maps)
    negatives = mine_each_side(
        unsupervised, labels, (train_rows, validation_rows, test_rows), config, neighbours
    )
    if groups is not None and config.group_negatives:  # training anchors only: scoring stays
        same = group_negatives(labels, groups, train_rows, config.group_negatives, config.seed)
        for row, picked in same.items():
            negatives[row] = picked + [r for r in negatives[row] if r not in picked]
    validation_triplets = make_triplets(
        labels, validation_rows, random.Random(config.seed + 2), negatives
    ) + list(extra_validation)
    test_triplets = make_triplets(labels, test_rows, random.Random(config.seed + 1), negatives)
    test_triplets += list(extra_test)
    identity = ProjectionNet(maps.shape[1])
    unsupervised_accuracy, _ = triplet_accuracy(identity, maps, flipped, test_triplets)
    initial = None
    if config.init == "whitened":  # label-free, from every photo that is not scored
        initial = fit_whitening(maps, np.flatnonzero(~split), config.whitening_shrink)
    trained = train_projection(
        maps,
        labels,
        train_rows,
        validation_triplets,
        flipped=flipped,
        negatives=negatives,
        extra_triplets=extra_train,
        config=config,
        on_epoch=on_epoch,
        validation_rows=validation_rows,
        initial=initial,
    )
    supervised_accuracy, _ = triplet_accuracy(trained.net, maps, flipped, test_triplets)

    def map10(vectors: np.ndarray) -> float:
        return score_vectors(vectors, labels[test_rows]).map_at_10

    return HeldOutFit(
        trained,
        test_triplets,
        map10(np.asarray(unsupervised[test_rows], np.float32)),
        map10(space_vectors(trained.net, maps, test_rows)),
        validation_triplets=validation_triplets,
        unsupervised_accuracy=unsupervised_accuracy,
        supervised_accuracy=supervised_accuracy,
        validation=validation,
    )


def unsupervised_vectors(maps: np.ndarray, block: int = 1024) -> np.ndarray:
    """The unsupervised space's vectors of every map as float16, ``block`` maps converted
    at a time (``similarity_vectors`` of the whole catalog would be N × H·W·C float32)."""
    from tiefvision_core.similarity.unsupervised import similarity_vectors

    n, c, h, w = maps.shape
    out = np.empty((n, c * h * w), np.float16)
    for start in range(0, n, block):
        out[start : start + block] = similarity_vectors(maps[start : start + block])
    return out
