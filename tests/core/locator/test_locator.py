"""Locator maths: the 50 % rules, box targets, the split, window↔pixel mapping, heads, inference."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests.locators import (
    GEOMETRY,
    IDENTITY_SCALER,
    RecordingEncoder,
    constant_heads,
    saved_locator,
    seeded_heads,
)
from tiefvision_core.catalog.synthetic import render_view
from tiefvision_core.catalog.synthetic_garments import make_products
from tiefvision_core.encoders.geometry import measure_geometry
from tiefvision_core.encoding.pixels import crop_pixels, whole_pixels
from tiefvision_core.locator.model import (
    LocatedBox,
    LocatorHeads,
    TargetScaler,
    WindowGeometry,
    average_box,
    box_targets,
    boxes_from_targets,
    inside_fraction,
    locate_in_maps,
    split_by_image,
    window_label,
)

# -- the 50 % rules --------------------------------------------------------------------------

BOX = (0.0, 0.0, 100.0, 100.0)


@pytest.mark.parametrize(
    ("crop", "fraction", "label"),
    [
        ((50, 0, 150, 100), 0.5, -1),  # exactly half inside: neither
        ((0, 50, 100, 150), 0.5, -1),  # exactly half, vertically
        ((49, 0, 149, 100), 0.51, 1),  # just over half: foreground
        ((51, 0, 151, 100), 0.49, 0),  # just under half: background
        ((10, 10, 60, 60), 1.0, 1),  # fully inside
        ((200, 200, 250, 250), 0.0, 0),  # disjoint
        ((100, 0, 200, 100), 0.0, 0),  # touching the box's edge only
        ((-50, -50, 50, 50), 0.25, 0),  # a quarter inside
        ((-100, 0, 100, 100), 0.5, -1),  # crop twice the box: exactly half
    ],
)
def test_inside_fraction_and_label_on_hand_made_crops(crop, fraction, label) -> None:
    assert float(inside_fraction(crop, BOX)) == pytest.approx(fraction, abs=1e-12)
    assert int(window_label(crop, BOX)) == label


def test_exactly_half_is_exactly_representable_and_ignored() -> None:
    # 96-pixel crop, 48 columns inside: 0.5 exactly, not 0.4999… or 0.5000…1.
    crop = (48.0, 0.0, 144.0, 96.0)
    box = (0.0, 0.0, 96.0, 96.0)
    assert inside_fraction(crop, box) == 0.5
    assert window_label(crop, box) == -1


def test_box_is_the_whole_image_and_crops_sit_at_its_corners() -> None:
    whole = (0.0, 0.0, 320.0, 256.0)
    corners = np.array(
        [(0, 0, 96, 96), (224, 0, 320, 96), (0, 160, 96, 256), (224, 160, 320, 256)], float
    )
    np.testing.assert_array_equal(inside_fraction(corners, whole), [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(window_label(corners, whole), [1, 1, 1, 1])
    # A crop sticking out past the image's corner by half its width: half inside.
    assert window_label((272, 0, 368, 96), whole) == -1


def test_box_larger_or_smaller_than_the_crop() -> None:
    crop = (100.0, 100.0, 196.0, 196.0)
    assert window_label(crop, (0, 0, 1000, 1000)) == 1  # box much larger: crop inside it
    # Box fully inside a much larger crop: it covers only 1/16 of the crop → background.
    small = (100.0, 100.0, 124.0, 124.0)
    assert float(inside_fraction(crop, small)) == pytest.approx(1 / 16)
    assert window_label(crop, small) == 0


def test_vectorised_labels_keep_the_grid_shape() -> None:
    windows = WindowGeometry(stride=32, crop_size=96, kernel=(3, 3)).windows(6, 8, (1.0, 1.0))
    assert windows.shape == (4, 6, 4)
    box = (40.0, 20.0, 170.0, 150.0)
    fractions = inside_fraction(windows, box)
    labels = window_label(windows, box)
    assert fractions.shape == (4, 6) and labels.shape == (4, 6) and labels.dtype == np.int8
    for r in range(4):
        for c in range(6):
            assert fractions[r, c] == inside_fraction(tuple(windows[r, c]), box)
            assert labels[r, c] == window_label(tuple(windows[r, c]), box)
    # Spot-check one by hand: window (0, 0) = [0, 96)², inside [40, 96)×[20, 96).
    assert fractions[0, 0] == pytest.approx(56 * 76 / 96**2)
    assert set(np.unique(labels)) <= {-1, 0, 1}


# -- regression targets ----------------------------------------------------------------------


def test_box_targets_by_hand() -> None:
    crop = np.array([10.0, 20.0, 110.0, 220.0])  # 100 wide, 200 high
    targets = box_targets(crop, (30.0, 60.0, 80.0, 220.0))
    np.testing.assert_allclose(targets, [0.2, 0.2, 0.7, 1.0], rtol=0, atol=1e-15)
    # A box beyond the crop gives targets outside [0, 1].
    np.testing.assert_allclose(
        box_targets(crop, (-40.0, 0.0, 210.0, 420.0)), [-0.5, -0.1, 2.0, 2.0], atol=1e-15
    )
    np.testing.assert_allclose(boxes_from_targets(crop, targets), [30.0, 60.0, 80.0, 220.0])


def test_targets_round_trip_on_random_crops_and_boxes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        lt = rng.uniform(-100, 500, size=(5, 7, 2))
        crops = np.concatenate([lt, lt + rng.uniform(1, 300, size=(5, 7, 2))], axis=-1)
        left, top = rng.uniform(0, 400, 2)
        box = (left, top, left + rng.uniform(1, 300), top + rng.uniform(1, 300))
        targets = box_targets(crops, box)
        assert targets.shape == (5, 7, 4)
        back = boxes_from_targets(crops, targets)
        np.testing.assert_allclose(back, np.broadcast_to(box, back.shape), rtol=1e-12, atol=1e-9)
    # And the other way round: any targets → boxes → the same targets.
    targets = rng.normal(size=(9, 4))
    crops = np.tile([5.0, 7.0, 101.0, 55.0], (9, 1))
    boxes = boxes_from_targets(crops, targets)
    for crop, box, target in zip(crops, boxes, targets, strict=True):
        np.testing.assert_allclose(box_targets(crop, tuple(box)), target, atol=1e-12)


def test_target_scaler_standardises_and_restores() -> None:
    rng = np.random.default_rng(1)
    targets = rng.normal(loc=[0.1, -0.2, 1.1, 0.9], scale=[0.05, 0.3, 2.0, 0.5], size=(500, 4))
    scaler = TargetScaler.fit(targets)
    np.testing.assert_allclose(scaler.mean, targets.mean(axis=0))
    np.testing.assert_allclose(scaler.std, targets.std(axis=0))
    z = scaler.standardise(targets)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(scaler.restore(z), targets, atol=1e-12)
    # Any leading shape is flattened to rows of four when fitting.
    assert TargetScaler.fit(targets.reshape(25, 20, 4)) == scaler


def test_target_scaler_needs_two_rows_and_survives_a_constant_column() -> None:
    with pytest.raises(ValueError, match="two"):
        TargetScaler.fit(np.zeros((1, 4)))
    with pytest.raises(ValueError):
        TargetScaler.fit(np.zeros((0, 4)))
    scaler = TargetScaler.fit(np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 3.0, 2.0, 5.0]]))
    assert scaler.std == (1e-6, 1.0, 1e-6, 1.0)
    assert np.isfinite(scaler.standardise(np.array([0.0, 1.0, 2.0, 3.0]))).all()


# -- the split -------------------------------------------------------------------------------

STRATA_SIZES = {"dress": 60, "skirt": 30, "bag": 8, "hat": 2, "solo": 1}


def _strata() -> dict[str, str]:
    strata, n = {}, 0
    for stratum, size in STRATA_SIZES.items():
        for _ in range(size):
            strata[f"img-{n:03d}"] = stratum
            n += 1
    return strata


def test_split_puts_every_image_in_exactly_one_side() -> None:
    strata = _strata()
    split = split_by_image(strata, test_fraction=0.2, seed=3)
    assert set(split) == set(strata)
    assert set(split.values()) == {"train", "test"}
    test = {i for i, side in split.items() if side == "test"}
    train = {i for i, side in split.items() if side == "train"}
    assert not test & train and test | train == set(strata)


def test_split_is_stratified_with_round_share_and_both_sides_for_small_strata() -> None:
    strata = _strata()
    split = split_by_image(strata, test_fraction=0.2, seed=3)
    n_test = {s: 0 for s in STRATA_SIZES}
    for image_id, side in split.items():
        n_test[strata[image_id]] += side == "test"
    # round(n · 0.2), at least one (and at most n − 1) when the stratum has two or more.
    assert n_test == {"dress": 12, "skirt": 6, "bag": 2, "hat": 1, "solo": 0}
    assert sum(n_test.values()) / len(strata) == pytest.approx(0.2, abs=0.02)


def test_split_depends_on_seed_not_on_input_order() -> None:
    strata = _strata()
    reordered = dict(reversed(list(strata.items())))
    assert list(reordered) != list(strata)
    assert split_by_image(reordered, test_fraction=0.3, seed=11) == split_by_image(
        strata, test_fraction=0.3, seed=11
    )
    splits = [split_by_image(strata, test_fraction=0.3, seed=s) for s in range(4)]
    assert all(splits[i] != splits[j] for i in range(4) for j in range(i + 1, 4))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_a_fraction_outside_zero_one(fraction: float) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        split_by_image({"a": "x", "b": "x"}, test_fraction=fraction, seed=0)


# -- windows ↔ pixels, on a toy encoder whose answer is known ---------------------------------


def _block_average_encoder() -> nn.Conv2d:
    """A 32×32, stride-32 block average: output (r, c) is the mean of pixel block (r, c)."""
    conv = nn.Conv2d(3, 1, kernel_size=32, stride=32, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0 / (3 * 32 * 32))
    return conv.eval()


def _argmax_head_position(features: nn.Module, pixels: torch.Tensor) -> tuple[int, int, tuple]:
    """Slide a 3×3 all-ones head over the encoder map; (row, col) of its maximum."""
    with torch.no_grad():
        fmap = features(pixels.float().div(255.0)[None])
        head = torch.nn.functional.conv2d(fmap, torch.ones(1, 1, 3, 3))[0, 0]
    flat = int(torch.argmax(head))
    row, col = divmod(flat, head.shape[1])
    # The maximum is unique: nowhere else does the head see the whole square.
    assert int((head >= head[row, col] - 1e-6).sum()) == 1
    return row, col, tuple(fmap.shape[2:])


def test_toy_encoder_geometry_is_measured_exactly() -> None:
    geometry = measure_geometry(_block_average_encoder(), crop_size=96)
    assert geometry.stride == 32
    assert geometry.receptive_field == 32
    assert geometry.offset == 15.5  # block r spans pixels 32r … 32r + 31
    assert geometry.grid == (3, 3) and geometry.channels == 1


def test_argmax_window_is_exactly_the_square_on_the_toy_encoder() -> None:
    pixels = np.zeros((256, 320, 3), np.uint8)  # 320 wide, 256 high
    pixels[96:192, 64:160] = 255  # one 96×96 window aligned to the stride
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)
    row, col, (map_h, map_w) = _argmax_head_position(_block_average_encoder(), tensor)
    assert (map_h, map_w) == (8, 10)
    assert (row, col) == (3, 2)
    geometry = WindowGeometry(stride=32, crop_size=96, kernel=(3, 3))
    assert geometry.head_grid(map_h, map_w) == (6, 8)
    windows = geometry.windows(map_h, map_w, (1.0, 1.0))
    np.testing.assert_array_equal(windows[row, col], [64.0, 96.0, 160.0, 192.0])
    # An input of half the original's size: the same window is twice as large in the original.
    np.testing.assert_array_equal(
        geometry.windows(map_h, map_w, (0.5, 0.5))[row, col], [128.0, 192.0, 320.0, 384.0]
    )


def test_scaled_input_maps_back_to_the_original_square() -> None:
    original = np.zeros((512, 640, 3), np.uint8)
    original[192:384, 128:320] = 255  # 192×192 square in the original
    pixels, scale = whole_pixels(Image.fromarray(original), side=320, multiple=32)
    assert tuple(pixels.shape) == (3, 256, 320) and scale == 0.5
    row, col, (map_h, map_w) = _argmax_head_position(_block_average_encoder(), pixels)
    windows = WindowGeometry(stride=32, crop_size=96, kernel=(3, 3)).windows(
        map_h, map_w, (scale, scale)
    )
    np.testing.assert_array_equal(windows[row, col], [128.0, 192.0, 320.0, 384.0])


def test_windows_differ_per_axis_scale() -> None:
    windows = WindowGeometry(stride=32, crop_size=224, kernel=(7, 7)).windows(9, 8, (0.5, 0.25))
    assert windows.shape == (3, 2, 4)
    np.testing.assert_array_equal(windows[2, 1], [64.0, 256.0, 512.0, 1152.0])
    assert WindowGeometry(32, 224, (7, 7)).head_grid(6, 20) == (0, 14)


# -- the mapping on the real encoder: a window's crop encodes like the map's window ----------


def _cosine_grid(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over positions of the cosine between channel vectors of (C, h, w) maps."""
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0).mean())


def test_crop_of_a_window_encodes_like_the_whole_maps_window(lite0) -> None:
    image, _ = render_view(make_products(1)[0], 1)
    stride = lite0.geometry.stride
    pixels, _ = whole_pixels(image, side=448, multiple=stride)
    resized = Image.fromarray(pixels.permute(1, 2, 0).numpy())
    kh, kw = lite0.geometry.grid
    geometry = WindowGeometry(stride=stride, crop_size=224, kernel=(kh, kw))
    with torch.inference_mode():
        whole = lite0.encode_maps(pixels[None]).float()[0]
        map_h, map_w = whole.shape[1:]
        windows = geometry.windows(map_h, map_w, (1.0, 1.0))
        rows, cols = geometry.head_grid(map_h, map_w)
        assert rows >= 3 and cols >= 3
        # Interior head positions, so every shift by one position stays inside the map.
        positions = [(r, c) for r in range(1, rows - 1) for c in range(1, cols - 1)]
        crops = torch.stack([crop_pixels(resized, tuple(windows[r, c]), 224) for r, c in positions])
        crop_maps = lite0.encode_maps(crops).float()
    assert crop_maps.shape[2:] == (kh, kw)

    def mean_cosine(dr: int, dc: int) -> float:
        return float(
            np.mean(
                [
                    _cosine_grid(crop_map, whole[:, r + dr : r + dr + kh, c + dc : c + dc + kw])
                    for crop_map, (r, c) in zip(crop_maps, positions, strict=True)
                ]
            )
        )

    by_shift = {(dr, dc): mean_cosine(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)}
    # Measured: aligned 0.72, the best shift 0.64 (padding differs at the crop's rim).
    assert by_shift[0, 0] > 0.68
    assert max(by_shift, key=by_shift.get) == (0, 0)
    assert by_shift[0, 0] - by_shift[0, 1] > 0.05
    assert by_shift[0, 0] - max(v for k, v in by_shift.items() if k != (0, 0)) > 0.04
    # The window at head position (0, 0), the input's top-left 224 square (measured 0.84 vs 0.61).
    with torch.inference_mode():
        corner = lite0.encode_maps(crop_pixels(resized, (0, 0, 224, 224), 224)[None]).float()[0]
    aligned = _cosine_grid(corner, whole[:, :kh, :kw])
    assert aligned > 0.78
    assert aligned - _cosine_grid(corner, whole[:, :kh, 1 : 1 + kw]) > 0.15


# -- heads -----------------------------------------------------------------------------------


def test_heads_output_shapes() -> None:
    heads = seeded_heads()
    logits, targets = heads(torch.randn(3, 8, 10, 12))
    assert logits.shape == (3, 4, 6)
    assert targets.shape == (3, 4, 4, 6)
    logits, targets = heads(torch.randn(2, 8, 7, 7))
    assert logits.shape == (2, 1, 1) and targets.shape == (2, 4, 1, 1)


def test_heads_slide_unchanged_over_a_larger_map() -> None:
    heads = seeded_heads()
    big = torch.randn(1, 8, 10, 12)
    with torch.no_grad():
        logits, targets = heads(big)
        for r, c in [(0, 0), (2, 3), (3, 5)]:
            crop_logit, crop_targets = heads(big[:, :, r : r + 7, c : c + 7].clone())
            torch.testing.assert_close(crop_logit[0, 0, 0], logits[0, r, c])
            torch.testing.assert_close(crop_targets[0, :, 0, 0], targets[0, :, r, c])
    # Each position depends on its own window only: changing a far pixel leaves (0, 0) alone.
    changed = big.clone()
    changed[:, :, 9, 11] += 100.0
    with torch.no_grad():
        logits2, _ = heads(changed)
    torch.testing.assert_close(logits2[0, 0, 0], logits[0, 0, 0])
    assert not torch.allclose(logits2[0, 3, 5], logits[0, 3, 5])


def test_channel_stats_have_a_floor() -> None:
    heads = LocatorHeads(4, (7, 7))
    heads.set_channel_stats(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.0, 2.0, 4.0, 6.0]))
    # median of (0, 2, 4, 6) is 2 in torch (lower middle) → floor 0.2
    np.testing.assert_allclose(heads.channel_std.flatten().numpy(), [0.2, 2.0, 4.0, 6.0])
    np.testing.assert_allclose(heads.channel_mean.flatten().numpy(), [1.0, 2.0, 3.0, 4.0])


# -- inference -------------------------------------------------------------------------------


def test_average_box_clips_and_rounds() -> None:
    boxes = np.array([[-10.0, 5.0, 50.0, 60.0], [10.0, 15.2, 150.0, 90.0]])
    # mean (0, 10.1, 100, 75) → clipped to 80×70 → (0, 10, 80, 70)
    assert average_box(boxes, 80, 70) == (0, 10, 80, 70)
    assert average_box(np.array([[0.4, 0.6, 10.7, 20.2]]), 100, 100) == (0, 1, 11, 20)
    assert all(isinstance(v, int) for v in average_box(boxes, 80, 70))
    # Entirely outside the image: clipping leaves nothing, so the whole image.
    assert average_box(np.array([[200.0, 0.0, 300.0, 50.0]]), 100, 70) == (0, 0, 100, 70)


def _graded_heads() -> LocatorHeads:
    """Heads on 1-channel maps whose logit is the map's value at a window's top-left cell
    (a 7×7 kernel with one weight), and whose box is the window itself: the test chooses
    each position's P(object) through the map."""
    heads = LocatorHeads(1, (7, 7), reduced=1, hidden=1, dropout=0.0)
    with torch.no_grad():
        for module in heads.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.zero_()
                module.bias.zero_()
        heads.reduce[0].weight.fill_(1.0)
        heads.reduce[0].bias.fill_(100.0)  # stays positive through the ReLU
        heads.classifier[0].weight[0, 0, 0, 0] = 1.0
        heads.classifier[0].bias.fill_(0.0)
        heads.classifier[3].weight.fill_(1.0)
        heads.classifier[5].weight.fill_(1.0)
        heads.classifier[5].bias.fill_(-100.0)  # logit = map value at the window's corner
        heads.regressor[-1].bias.copy_(torch.tensor([0.0, 0.0, 1.0, 1.0]))
    return heads


def _graded_map(logits: dict[tuple[int, int], float], rows: int = 3, cols: int = 4):
    """A (1, rows+6, cols+6) map whose head position (r, c) has logit ``logits[(r, c)]``
    (−20 where not given)."""
    fmap = torch.full((1, rows + 6, cols + 6), -20.0)
    for (r, c), logit in logits.items():
        fmap[0, r, c] = logit
    return fmap


def test_few_positions_over_the_threshold_take_the_best_ones_weighted_by_p() -> None:
    # No position reaches 0.8: the three best (logits 1, 0, −1 → P 0.73, 0.5, 0.27) are kept,
    # their windows (the heads predict the window itself) averaged with weights P.
    logits = {(0, 0): 1.0, (2, 3): 0.0, (1, 2): -1.0, (0, 3): -2.0}
    maps = [(_graded_map(logits), (1.0, 1.0))]
    kwargs = {"geometry": GEOMETRY, "scaler": IDENTITY_SCALER, "image_size": (600, 500)}
    located = locate_in_maps(_graded_heads(), maps, best_positions=3, **kwargs)
    assert located.low_confidence is True and located.fallback is False
    assert located.positions_kept == 3
    p = 1 / (1 + np.exp(-np.array([1.0, 0.0, -1.0])))
    windows = np.array([[0, 0, 224, 224], [96, 64, 320, 288], [64, 32, 288, 256]], float)
    expected = (windows * p[:, None]).sum(0) / p.sum()
    assert located.box == tuple(round(v) for v in expected)
    assert located.box != (0, 0, 600, 500)  # not the whole photo
    assert located.score == pytest.approx(p.mean(), rel=1e-5)
    assert located.as_dict()["low_confidence"] is True
    # min_positions: one position passing is not enough when two are wanted.
    logits[(0, 0)] = 5.0
    passing = locate_in_maps(_graded_heads(), [(_graded_map(logits), (1.0, 1.0))], **kwargs)
    assert passing.low_confidence is False and passing.positions_kept == 1
    assert passing.box == (0, 0, 224, 224)
    wanting_two = locate_in_maps(
        _graded_heads(),
        [(_graded_map(logits), (1.0, 1.0))],
        min_positions=2,
        best_positions=3,
        **kwargs,
    )
    assert wanting_two.low_confidence is True and wanting_two.positions_kept == 3


def test_no_position_over_the_threshold_is_located_low_confidence_not_the_whole_image() -> None:
    heads = constant_heads(-20.0, (0.0, 0.0, 1.0, 1.0))
    maps = [(torch.randn(8, 9, 10), (1.0, 1.0)), (torch.randn(1, 8, 7, 8), (0.5, 0.5))]
    located = locate_in_maps(
        heads, maps, geometry=GEOMETRY, scaler=IDENTITY_SCALER, image_size=(320, 288)
    )
    # All positions tie: the first five (scale 1, row 0, columns 0…3, then row 1 column 0)
    # are averaged: left (0+32+64+96+0)/5 = 38.4, top 32/5 = 6.4, right and bottom +224.
    assert located.box == (38, 6, 262, 230)
    assert located.fallback is False and located.low_confidence is True
    assert located.positions_kept == 5
    assert located.score == pytest.approx(1 / (1 + math.exp(20.0)), rel=1e-4)
    # Only a map smaller than one window: nothing to score, the whole photo, score 0.
    small = locate_in_maps(
        heads,
        [(torch.randn(8, 5, 5), (1.0, 1.0))],
        geometry=GEOMETRY,
        scaler=IDENTITY_SCALER,
        image_size=(50, 40),
    )
    assert small == LocatedBox((0, 0, 50, 40), 0.0, 0, True)
    assert small.low_confidence is False


def test_constant_heads_average_the_windows_of_every_scale() -> None:
    # Targets (0, 0, 1, 1) after restoring: every kept box is its window.
    heads = constant_heads(20.0, (0.0, 0.0, 1.0, 1.0))
    maps = [
        (torch.randn(8, 9, 10), (1.0, 1.0)),  # 3×4 positions, lefts 0…96, tops 0…64
        (torch.randn(1, 8, 7, 8), (0.5, 0.5)),  # 1×2 positions: (0,0,448,448), (64,0,512,448)
        (torch.randn(8, 6, 30), (2.0, 2.0)),  # smaller than a window: skipped
    ]
    located = locate_in_maps(
        heads, maps, geometry=GEOMETRY, scaler=IDENTITY_SCALER, image_size=(500, 600)
    )
    assert located.fallback is False and located.positions_kept == 12 + 2
    assert located.score == pytest.approx(1.0, abs=1e-8)
    # left: (12·48 + 0 + 64) / 14 = 45.71; top: 12·32 / 14 = 27.43;
    # right: (12·272 + 448 + 512) / 14 = 301.71; bottom: (12·256 + 2·448) / 14 = 283.43
    assert located.box == (46, 27, 302, 283)
    assert located.as_dict() == {
        "box": [46, 27, 302, 283],
        "score": 1.0,
        "positions_kept": 14,
        "fallback": False,
        "low_confidence": False,
    }


def test_kept_boxes_are_restored_targets_around_their_windows() -> None:
    heads = seeded_heads()
    with torch.no_grad():
        heads.classifier[-1].bias.fill_(30.0)  # every position passes
    scaler = TargetScaler((0.1, 0.05, 0.9, 0.95), (0.2, 0.1, 0.3, 0.25))
    torch.manual_seed(1)
    maps = [(torch.randn(8, 9, 10), (1.1, 1.2)), (torch.randn(8, 8, 7), (0.6, 0.55))]
    image_size = (400, 450)
    located = locate_in_maps(heads, maps, geometry=GEOMETRY, scaler=scaler, image_size=image_size)

    expected = []
    with torch.no_grad():
        for fmap, scale in maps:
            _, targets = heads(fmap[None])
            restored = scaler.restore(targets[0].permute(1, 2, 0).numpy())
            windows = GEOMETRY.windows(fmap.shape[1], fmap.shape[2], scale)
            expected.append(boxes_from_targets(windows, restored).reshape(-1, 4))
    boxes = np.concatenate(expected)
    assert located.positions_kept == len(boxes) == 3 * 4 + 2 * 1
    mean = boxes.mean(axis=0)
    clipped = np.clip(mean, 0, [image_size[0], image_size[1]] * 2)
    assert located.box == tuple(round(v) for v in clipped)
    assert located.fallback is False


def test_threshold_is_inclusive_and_selects_positions() -> None:
    heads = constant_heads(0.0, (0.0, 0.0, 1.0, 1.0))  # P = 0.5 everywhere
    maps = [(torch.randn(8, 7, 7), (1.0, 1.0))]
    kwargs = {"geometry": GEOMETRY, "scaler": IDENTITY_SCALER, "image_size": (224, 224)}
    at = locate_in_maps(heads, maps, threshold=0.5, **kwargs)
    assert at == LocatedBox((0, 0, 224, 224), 0.5, 1, False)
    above = locate_in_maps(heads, maps, threshold=0.51, **kwargs)
    assert above.fallback is False and above.low_confidence is True and above.score == 0.5


# -- the query path: scales chosen at query time, the model read once per version ----------


def test_locate_image_looks_at_the_query_scales_when_given(tmp_path) -> None:
    from tiefvision_core.locator.locate import locate_image
    from tiefvision_core.storage.stores import LocalStore

    model = saved_locator(LocalStore(tmp_path))
    image = Image.new("RGB", (320, 400))
    encoder = RecordingEncoder()
    locate_image(model, encoder, image)
    assert [max(size) for size in encoder.inputs] == [320, 448, 576]  # as trained
    encoder.inputs.clear()
    located = locate_image(model, encoder, image, scales=(320, 448))
    assert [max(size) for size in encoder.inputs] == [320, 448]
    assert located.fallback is False


def test_query_box_reads_a_locator_version_once(tmp_path, monkeypatch) -> None:
    from tiefvision_core.index import models, photo_search
    from tiefvision_core.locator import model_files
    from tiefvision_core.storage.layout import LOCATOR_CURRENT
    from tiefvision_core.storage.stores import LocalStore

    store = LocalStore(tmp_path)
    saved_locator(store)
    loads = []
    real = model_files.load_locator
    monkeypatch.setattr(
        model_files, "load_locator", lambda *a, **k: loads.append(1) or real(*a, **k)
    )
    monkeypatch.setattr(models, "MODELS", models.ModelCache())
    image = Image.new("RGB", (320, 400))
    first = photo_search.query_box(store, RecordingEncoder(), image)
    assert photo_search.query_box(store, RecordingEncoder(), image) == first
    assert len(loads) == 1
    newer = saved_locator(store, 21.0)  # a new CURRENT is picked up by the next upload
    photo_search.query_box(store, RecordingEncoder(), image)
    assert len(loads) == 2 and store.read_pointer(LOCATOR_CURRENT) == newer.version


def test_an_upload_is_located_at_the_query_scales_of_the_trained_ones(tmp_path) -> None:
    from tiefvision_core.index import photo_search
    from tiefvision_core.storage.stores import LocalStore

    assert photo_search.query_scales((320, 448, 576)) == photo_search.QUERY_SCALES == (448, 576)
    assert photo_search.query_scales((320, 448, 576), (576, 320)) == (320, 576)  # trained order
    assert photo_search.query_scales((256, 512)) == (256, 512)  # none wanted: all trained ones
    # A side fitted to narrow products (above the query scales) is kept by default.
    assert photo_search.query_scales((320, 448, 576, 768)) == (448, 576, 768)
    assert photo_search.query_scales((320, 448, 576, 768), (448, 576)) == (448, 576)
    store = LocalStore(tmp_path)
    saved_locator(store)
    encoder = RecordingEncoder()
    photo_search.query_box(store, encoder, Image.new("RGB", (320, 400)))
    assert [max(size) for size in encoder.inputs] == [448, 576]
    encoder.inputs.clear()
    photo_search.query_box(store, encoder, Image.new("RGB", (320, 400)), scales=(320, 448, 576))
    assert [max(size) for size in encoder.inputs] == [320, 448, 576]


def test_window_geometry_reads_back_its_json_form() -> None:
    """metadata.json and dataset.json hold the kernel as a list: it comes back a tuple."""
    geometry = WindowGeometry(stride=32, crop_size=224, kernel=(7, 7))
    again = WindowGeometry.from_dict(json.loads(json.dumps(asdict(geometry))))
    assert again == geometry
    assert again.kernel == (7, 7)
