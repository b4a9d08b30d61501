"""Training's robustness switches on hand-made tensors: a mirrored batch is the batch of
the mirrored photo, the mined negatives are exactly the misclassified background windows,
the temperature makes held-out probabilities calibrated."""

from __future__ import annotations

import numpy as np
import torch

from tiefvision_core.locator.crops import _windows_for
from tiefvision_core.locator.model import WindowGeometry
from tiefvision_core.locator.training import mine_hard_negatives, mirror_windows

GEOMETRY = WindowGeometry(stride=32, crop_size=224, kernel=(7, 7))


def _labels_and_targets(box, width: int, height: int):
    """What the crops dataset stores for a photo whose input is its own size (scale 1)."""
    row = {"grid_h": height // 32, "grid_w": width // 32, "input_w": width, "input_h": height}
    windows = _windows_for({**row, "width": width, "height": height}, box, GEOMETRY)
    rows, cols = GEOMETRY.head_grid(row["grid_h"], row["grid_w"])
    labels = torch.from_numpy(windows["label"].reshape(rows, cols))
    targets = torch.from_numpy(windows["target"].reshape(rows, cols, 4))
    return labels, targets


def test_a_mirrored_batch_is_the_mirrored_photo() -> None:
    width, height = 480, 320  # a 15 × 10 map, 9 × 4 head positions
    box = (40, 30, 250, 300)
    labels, targets = _labels_and_targets(box, width, height)
    maps = torch.randn(1, 3, height // 32, width // 32)
    got_maps, got_labels, got_targets = mirror_windows(maps, labels[None], targets[None])
    mirrored_box = (width - box[2], box[1], width - box[0], box[3])
    want_labels, want_targets = _labels_and_targets(mirrored_box, width, height)
    assert torch.equal(got_labels[0], want_labels)
    torch.testing.assert_close(got_targets[0], want_targets, rtol=0, atol=1e-12)
    assert torch.equal(got_maps[0, :, :, 0], maps[0, :, :, -1])  # the map read right to left
    assert not torch.equal(got_labels[0], labels)  # the box is off-centre: it did change
    # Twice is the original.
    again = mirror_windows(got_maps, got_labels, got_targets)
    assert torch.equal(again[1], labels[None])
    torch.testing.assert_close(again[2], targets[None], rtol=0, atol=1e-12)


def test_mined_negatives_are_the_misclassified_background_windows() -> None:
    labels = torch.tensor([[0, 0, 1, -1], [0, 1, 0, 0]], dtype=torch.int8)
    logits = torch.tensor([[2.0, -1.0, 3.0, 5.0], [0.0, -4.0, -0.1, 7.0]])
    mined = mine_hard_negatives(logits, labels)
    # background with P ≥ 0.5 only: not foreground (even when missed), not ignored windows
    expected = np.array([[True, False, False, False], [True, False, False, True]])
    np.testing.assert_array_equal(mined.numpy(), expected)


def test_the_fitted_temperature_recovers_the_one_the_labels_were_drawn_with() -> None:
    from tiefvision_core.locator.crops import MapSample
    from tiefvision_core.locator.model import LocatorHeads
    from tiefvision_core.locator.training import fit_temperature

    # 1-channel maps, heads whose logit is the map's value: labels drawn with P = σ(z / 2.5)
    heads = LocatorHeads(1, (1, 1), reduced=1, hidden=1, dropout=0.0).eval()
    with torch.no_grad():
        for module in heads.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
        heads.reduce[0].bias.fill_(50.0)  # positive through the ReLUs, removed at the end
        heads.classifier[-1].bias.fill_(-50.0)
    generator = torch.Generator().manual_seed(0)
    samples = []
    for i in range(40):
        z = torch.randn(1, 16, 16, generator=generator) * 6
        labels = (torch.rand(16, 16, generator=generator) < torch.sigmoid(z[0] / 2.5)).to(
            torch.int8
        )
        samples.append(
            MapSample(
                f"p{i}",
                "train",
                320,
                z,
                labels,
                torch.zeros(16, 16, 4),
                (1.0, 1.0),
                (16, 16),
                (0, 0, 8, 8),
            )
        )
    before = heads(samples[0].maps[None])[0]
    temperature = fit_temperature(heads, samples, torch.device("cpu"))
    assert abs(temperature - 2.5) < 0.15
    torch.testing.assert_close(heads(samples[0].maps[None])[0], before / temperature)
