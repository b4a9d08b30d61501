"""Which input sides ``locate`` uses: the cheapest subset of the trained sides whose
validation IoU stays within the tolerance of all sides' (``locator.sides``). Its wiring
into training and the saved model is tested in ``test_runs.py``."""

from __future__ import annotations

import pytest

from tiefvision_core.locator.sides import choose_sides, side_cost

SCORES = {(320,): 0.40, (448,): 0.645, (576,): 0.66, (320, 448): 0.64, (320, 576): 0.655,
          (448, 576): 0.66, (320, 448, 576): 0.65}  # fmt: skip


def test_the_cheapest_subset_within_the_tolerance_wins() -> None:
    choice = choose_sides((320, 448, 576), SCORES.__getitem__, validation_photos=19)
    # 320 alone is cheapest but loses 0.25; 448 alone loses 0.005 and costs 4 units of 224².
    assert choice.sides == (448,)
    assert choice.all_sides_iou == 0.65 and choice.chosen_iou == 0.645
    assert len(choice.subsets) == 7
    assert [s.cost for s in choice.subsets] == sorted(s.cost for s in choice.subsets)
    strict = choose_sides((320, 448, 576), SCORES.__getitem__, validation_photos=19, tolerance=0)
    assert strict.sides == (576,)  # the cheapest subset at least as good as all sides


def test_nothing_to_measure_keeps_every_side() -> None:
    assert choose_sides((320, 448), SCORES.__getitem__, validation_photos=0).sides == (320, 448)
    assert choose_sides((448,), SCORES.__getitem__, validation_photos=5).sides == (448,)
    with pytest.raises(ValueError, match="tolerance"):
        choose_sides((320, 448), SCORES.__getitem__, validation_photos=5, tolerance=-0.1)


def test_side_cost_counts_passes_at_224() -> None:
    assert side_cost((224,)) == 1.0
    assert side_cost((448,)) == 4.0 and side_cost((224, 448)) == 5.0
