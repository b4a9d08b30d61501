"""Which of the trained input sides the locator looks at a photo with: chosen by measurement.

Why: each side is a whole CNN pass over the photo, and the passes grow with the square of
the side — on a 3:4 photo the trained sides 320, 448, 576 (+ 768 for narrow products) cost
about 9.5 (18) passes' worth of 224-pixel work, where the encoder's single-pass bound is
one. The heads are the same at every side, so any subset of the trained sides is a valid
locator; how much a subset loses is measured, not guessed: after training, every non-empty
subset locates the **validation** photos (never the scored ones) and the cheapest subset
whose mean IoU stays within :data:`SIDE_TOLERANCE` of all sides' is the one ``locate`` and
search by photo use. The choice and every subset's figures travel with the model
(``metadata.json``: ``locate_scales``, ``side_choice``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations

__all__ = ["SIDE_TOLERANCE", "SideChoice", "SubsetScore", "choose_sides", "side_cost"]

#: How much validation mean IoU a cheaper set of sides may lose against all trained sides.
SIDE_TOLERANCE = 0.005


def side_cost(sides: Sequence[int]) -> float:
    """The CNN work of locating at ``sides``, in passes at 224 pixels on a square photo
    (the work grows with the input's area; the aspect ratio scales every side alike)."""
    return sum(side * side for side in sides) / (224 * 224)


@dataclass(frozen=True)
class SubsetScore:
    sides: tuple[int, ...]
    mean_iou: float
    cost: float


@dataclass(frozen=True)
class SideChoice:
    """The chosen sides, all sides' score, and every subset measured (cheapest first)."""

    sides: tuple[int, ...]
    all_sides_iou: float
    chosen_iou: float
    tolerance: float
    validation_photos: int
    subsets: tuple[SubsetScore, ...]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def choose_sides(
    trained: Sequence[int],
    score: Callable[[tuple[int, ...]], float],
    *,
    validation_photos: int,
    tolerance: float = SIDE_TOLERANCE,
) -> SideChoice:
    """The cheapest non-empty subset of ``trained`` whose ``score`` (mean validation IoU
    when locating with those sides alone) is at least all sides' minus ``tolerance``; ties
    in cost go to the higher score. With no validation photo there is nothing to measure
    on, so every trained side is kept."""
    everything = tuple(trained)
    if tolerance < 0:
        raise ValueError(f"tolerance {tolerance}: choose ≥ 0")
    if validation_photos == 0 or len(everything) == 1:
        return SideChoice(everything, 0.0, 0.0, tolerance, validation_photos, ())
    measured = [
        SubsetScore(subset, round(score(subset), 4), round(side_cost(subset), 2))
        for size in range(1, len(everything) + 1)
        for subset in combinations(everything, size)
    ]
    measured.sort(key=lambda s: (s.cost, -s.mean_iou))
    full = next(s for s in measured if s.sides == everything)
    best = next(s for s in measured if s.mean_iou >= full.mean_iou - tolerance)
    return SideChoice(
        best.sides, full.mean_iou, best.mean_iou, tolerance, validation_photos, tuple(measured)
    )
