"""Box evaluation: IoU, the two baselines, the summary table and the pictures."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tiefvision_core.locator.evaluation import (
    BoxScores,
    centre_median_boxes,
    draw_box_grid,
    evaluate_boxes,
    iou,
    iou_histogram_png,
    png_bytes,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),  # identical
        ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),  # disjoint
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # sharing an edge only
        ((0, 0, 10, 10), (5, 0, 15, 10), 1 / 3),  # shifted by half: 50 / 150
        ((0, 0, 10, 10), (5, 5, 15, 15), 25 / 175),  # shifted by half on both axes
        ((0, 0, 10, 10), (2, 2, 7, 7), 0.25),  # contained: 25 / 100
        ((2, 2, 7, 7), (0, 0, 10, 10), 0.25),  # symmetric
    ],
)
def test_iou_exact_values(a, b, expected) -> None:
    assert float(iou(np.array(a), np.array(b))) == pytest.approx(expected, abs=1e-15)


def test_iou_is_elementwise_and_broadcasts() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 4, 4]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [8, 8, 9, 9]], float)
    np.testing.assert_allclose(iou(a, b), [1.0, 1 / 3, 0.0])
    np.testing.assert_allclose(iou(a, np.array([0, 0, 10, 10])), [1.0, 1.0, 0.16])
    # Degenerate boxes give 0, not NaN.
    assert float(iou(np.zeros(4), np.zeros(4))) == 0.0


def test_centre_median_boxes_by_hand() -> None:
    reference_sizes = np.array([[100, 200], [200, 100], [100, 100]])
    # width shares 0.5, 0.4, 0.9 → median 0.5; height shares 0.6, 0.8, 0.2 → median 0.6
    reference_boxes = np.array([[0, 0, 50, 120], [10, 10, 90, 90], [0, 0, 90, 20]])
    sizes = np.array([[200, 100], [50, 50]])
    boxes = centre_median_boxes(sizes, reference_boxes, reference_sizes)
    np.testing.assert_allclose(boxes, [[50, 20, 150, 80], [12.5, 10, 37.5, 40]])


def _tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    truth = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d"],
            "left": [0, 50, 0, 0],
            "top": [0, 0, 0, 0],
            "right": [50, 150, 100, 10],
            "bottom": [100, 100, 25, 10],
            "width": [100, 200, 100, 100],
            "height": [100, 100, 100, 100],
        }
    )
    predicted = pd.DataFrame(
        {
            "image_id": ["c", "a", "b", "e"],  # "d" has no prediction, "e" no truth
            "left": [0, 0, 100, 0],
            "top": [0, 0, 0, 0],
            "right": [100, 50, 200, 5],
            "bottom": [100, 100, 100, 5],
            "fallback": [True, False, False, False],
        }
    )
    # One reference box covering half of each side: the centre box is half the photo.
    reference = pd.DataFrame(
        {"left": [10], "top": [10], "right": [60], "bottom": [60], "width": [100], "height": [100]}
    )
    return predicted, truth, reference


def test_evaluate_boxes_on_a_hand_made_table() -> None:
    predicted, truth, reference = _tables()
    evaluation = evaluate_boxes(predicted, truth, reference)
    assert evaluation.images == 3 and evaluation.fallbacks == 1
    per_image = evaluation.per_image.set_index("image_id")
    assert sorted(per_image.index) == ["a", "b", "c"]
    # locator: a exact (1), b shifted by half (1/3), c the whole image over a quarter (1/4)
    np.testing.assert_allclose(per_image.loc[["a", "b", "c"], "iou"], [1.0, 1 / 3, 0.25])
    # whole image: a 5000/10000, b 10000/20000, c 2500/10000
    np.testing.assert_allclose(per_image.loc[["a", "b", "c"], "iou_whole"], [0.5, 0.5, 0.25])
    # centre (half the photo): a (25,25,75,75)·(0,0,50,100) = 1250/6250; b (50,25,150,75)
    # inside (50,0,150,100) = 5000/10000; c (25,25,75,75) touches (0,0,100,25) only → 0
    np.testing.assert_allclose(per_image.loc[["a", "b", "c"], "iou_centre"], [0.2, 0.5, 0.0])
    assert per_image["fallback"].to_dict() == {"a": False, "b": False, "c": True}

    assert evaluation.locator == BoxScores(0.5278, 0.3333, 0.3333)  # (1 + 1/3 + 1/4) / 3
    assert evaluation.whole_image == BoxScores(0.4167, 0.6667, 0.0)  # 1.25 / 3
    assert evaluation.centre_median == BoxScores(0.2333, 0.3333, 0.0)  # 0.7 / 3
    assert evaluation.as_dict() == {
        "images": 3,
        "fallbacks": 1,
        "low_confidence": 0,
        "locator": {"mean_iou": 0.5278, "share_iou_05": 0.3333, "share_iou_07": 0.3333},
        "whole_image": {"mean_iou": 0.4167, "share_iou_05": 0.6667, "share_iou_07": 0.0},
        "centre_median": {"mean_iou": 0.2333, "share_iou_05": 0.3333, "share_iou_07": 0.0},
    }
    assert [row["boxes"] for row in evaluation.table()] == [
        "locator",
        "whole image",
        "centre crop, median size",
    ]
    assert evaluation.table()[1]["mean_iou"] == 0.4167


def test_shares_count_the_threshold_itself() -> None:
    scores = BoxScores.of(np.array([0.5, 0.7, 0.49, 0.69]))
    assert scores == BoxScores(0.595, 0.75, 0.25)  # 0.5, 0.7, 0.69 ≥ 0.5; only 0.7 ≥ 0.7


def test_missing_fallback_column_means_no_fallbacks() -> None:
    predicted, truth, reference = _tables()
    evaluation = evaluate_boxes(predicted.drop(columns="fallback"), truth, reference)
    assert evaluation.fallbacks == 0
    assert not evaluation.per_image["fallback"].any()


def test_no_common_image_raises() -> None:
    predicted, truth, reference = _tables()
    with pytest.raises(ValueError, match="no image"):
        evaluate_boxes(predicted[predicted["image_id"] == "e"], truth, reference)


GREEN, RED = (0, 170, 0), (220, 0, 0)


def _bbox_of(sheet: Image.Image, colour: tuple[int, int, int]) -> tuple[int, int, int, int]:
    pixels = np.asarray(sheet)
    ys, xs = np.nonzero(np.all(pixels == colour, axis=-1))
    assert len(xs), f"no {colour} pixel"
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_draw_box_grid_draws_true_green_and_predicted_red() -> None:
    photo = Image.new("RGB", (400, 200), (128, 128, 128))  # scaled by 0.25 into a 100 tile
    other = Image.new("L", (100, 100), 50)
    items = [
        (photo, (40, 40, 200, 160), (240, 20, 360, 100), 0.0),
        (other, (10, 10, 50, 50), (10, 10, 50, 50), 1.0),
    ]
    sheet = draw_box_grid(items, columns=3, tile=100)
    assert sheet.size == (300, 116) and sheet.mode == "RGB"
    # Photo 1: thumbnail 100×50 at (0, 25). True box → (10, 35)–(50, 65);
    # predicted → (60, 30)–(90, 50). Lines are two pixels wide, drawn inwards.
    first = sheet.crop((0, 0, 100, 100))
    assert _bbox_of(first, GREEN) == (10, 35, 50, 65)
    assert _bbox_of(first, RED) == (60, 30, 90, 50)
    assert first.getpixel((30, 50)) == (128, 128, 128)  # inside the boxes: the photo
    assert first.getpixel((30, 10)) == (255, 255, 255)  # above the thumbnail: the sheet
    # Photo 2 (grey, converted to RGB): both boxes equal, red drawn last covers green.
    second = sheet.crop((100, 0, 200, 100))
    assert _bbox_of(second, RED) == (10, 10, 50, 50)
    assert not np.all(np.asarray(second) == GREEN, axis=-1).any()
    assert second.getpixel((30, 30)) == (50, 50, 50)
    # The third tile and the second row are left empty; the caption is dark text.
    assert np.all(np.asarray(sheet.crop((200, 0, 300, 100))) == 255)
    assert np.asarray(sheet.crop((0, 100, 100, 116))).min() < 100


def test_draw_box_grid_rows_follow_the_item_count() -> None:
    image = Image.new("RGB", (10, 10))
    items = [(image, (0, 0, 5, 5), (0, 0, 5, 5), 0.5)] * 7
    assert draw_box_grid(items, columns=3, tile=50).size == (150, 3 * 66)
    assert draw_box_grid([], columns=2, tile=40).size == (80, 56)


def test_iou_histogram_is_a_png() -> None:
    evaluation = evaluate_boxes(*_tables())
    data = iou_histogram_png(evaluation, bins=10)
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.size == (600, 350)
        image.load()


def test_png_bytes_round_trip() -> None:
    image = Image.new("RGB", (7, 5), (1, 2, 3))
    data = png_bytes(image)
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as back:
        assert back.size == (7, 5) and back.getpixel((6, 4)) == (1, 2, 3)


def test_low_confidence_boxes_are_counted_beside_fallbacks() -> None:
    predicted, truth, reference = _tables()
    flagged = predicted.assign(low_confidence=[False, True, True, False])  # a and b
    evaluation = evaluate_boxes(flagged, truth, reference)
    assert evaluation.low_confidence == 2 and evaluation.fallbacks == 1
    assert evaluation.as_dict()["low_confidence"] == 2
    per_image = evaluation.per_image.set_index("image_id")
    assert per_image["low_confidence"].to_dict() == {"a": True, "b": True, "c": False}
    # Records written before the flag (no column, or nulls) count none.
    assert evaluate_boxes(predicted, truth, reference).low_confidence == 0
    nulls = predicted.assign(low_confidence=[None, None, True, None])
    assert evaluate_boxes(nulls, truth, reference).low_confidence == 1
