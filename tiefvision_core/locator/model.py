"""The OverFeat-style locator: windows, labels, targets, convolutional heads, box inference.

The seed's method, made exact for any encoder:

* A **window** is what one head position sees: ``kernel`` encoder positions, i.e. a
  ``crop_size``-pixel square of the whole-image input whose top-left corner sits at
  ``(col·stride, row·stride)`` — the same pixels a fixed-grid crop of that square would
  encode. Windows are mapped back to the original photo by the input's scale per axis.
* A window is **foreground** when more than half of it lies inside the product's box,
  **background** when more than half lies outside; exactly half is neither (ignored).
* The **regression target** is the box relative to the window (in window sizes), so every
  foreground position predicts the whole box; targets are standardised by the training
  mean and std, which travel with the model.
* The **heads** are fully connected layers written as convolutions (a ``kernel``-sized
  convolution, then 1×1s), so the same weights score a crop and slide over a whole photo.
* **Inference** keeps positions with P(object) ≥ threshold over every input scale and
  averages their boxes (the seed's rule), wherever at least ``min_positions`` positions
  pass. The rule for the other photos (why: on photos unlike the training ones — clutter,
  people, other light — the classifier is less sure, and the whole photo it used to fall
  back to scores ~0.16 IoU on real street photos, worse than any located box):

  - **low confidence**: fewer than ``min_positions`` positions pass, but windows exist. The
    ``best_positions`` highest-scoring positions over all scales are kept and their boxes
    averaged, each weighted by its P(object); the record is flagged ``low_confidence``,
    its ``score`` is the kept positions' mean P (below the threshold), so a consumer can
    still tell it apart from a confident box;
  - **fallback**: no window at all (the photo is smaller than one window at every scale):
    the whole photo, flagged ``fallback``, score 0.

Pure maths and torch modules: no storage, no Prefect.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "BEST_POSITIONS",
    "MIN_POSITIONS",
    "BoxF",
    "LocatedBox",
    "LocatorHeads",
    "TargetScaler",
    "WindowGeometry",
    "average_box",
    "box_targets",
    "boxes_from_targets",
    "inside_fraction",
    "locate_in_maps",
    "split_by_image",
    "window_label",
]

BoxF = tuple[float, float, float, float]  # left, top, right, bottom

FOREGROUND, BACKGROUND, IGNORED = 1, 0, -1


# -- windows and the pixels they cover -------------------------------------------------------


@dataclass(frozen=True)
class WindowGeometry:
    """How head positions map to pixels: encoder ``stride``, window side ``crop_size`` in
    input pixels, and the head's ``kernel`` (the encoder's grid for one crop)."""

    stride: int
    crop_size: int
    kernel: tuple[int, int]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowGeometry:
        """Read back from its JSON form (:func:`dataclasses.asdict`): the kernel is a list."""
        return cls(**{**data, "kernel": tuple(data["kernel"])})

    def head_grid(self, map_h: int, map_w: int) -> tuple[int, int]:
        """Head positions over an encoder map of ``map_h``×``map_w`` (0 when too small)."""
        return max(0, map_h - self.kernel[0] + 1), max(0, map_w - self.kernel[1] + 1)

    def windows(self, map_h: int, map_w: int, scale_xy: tuple[float, float]) -> np.ndarray:
        """(rows, cols, 4) window boxes in *original* pixels for every head position.

        ``scale_xy`` is input pixels per original pixel along x and y (they differ slightly
        because input sides are rounded to the stride).
        """
        rows, cols = self.head_grid(map_h, map_w)
        top = np.arange(rows, dtype=np.float64)[:, None] * self.stride
        left = np.arange(cols, dtype=np.float64)[None, :] * self.stride
        sx, sy = scale_xy
        out = np.empty((rows, cols, 4), np.float64)
        out[..., 0] = left / sx
        out[..., 1] = top / sy
        out[..., 2] = (left + self.crop_size) / sx
        out[..., 3] = (top + self.crop_size) / sy
        return out


def _area(box: np.ndarray) -> np.ndarray:
    return np.clip(box[..., 2] - box[..., 0], 0, None) * np.clip(box[..., 3] - box[..., 1], 0, None)


def inside_fraction(crops: np.ndarray | BoxF, box: BoxF) -> np.ndarray:
    """Share of each crop's area that lies inside ``box`` (crops: (..., 4))."""
    crops = np.asarray(crops, np.float64)
    inter = np.stack(
        [
            np.maximum(crops[..., 0], box[0]),
            np.maximum(crops[..., 1], box[1]),
            np.minimum(crops[..., 2], box[2]),
            np.minimum(crops[..., 3], box[3]),
        ],
        axis=-1,
    )
    return _area(inter) / np.maximum(_area(crops), 1e-12)


def window_label(crops: np.ndarray | BoxF, box: BoxF) -> np.ndarray:
    """1 foreground (> 50 % inside), 0 background (> 50 % outside), -1 exactly half."""
    inside = inside_fraction(crops, box)
    labels = np.full(inside.shape, IGNORED, np.int8)
    labels[inside > 0.5] = FOREGROUND
    labels[inside < 0.5] = BACKGROUND
    return labels


def box_targets(crops: np.ndarray, box: BoxF) -> np.ndarray:
    """The box relative to each crop, in crop widths/heights from the crop's top-left."""
    crops = np.asarray(crops, np.float64)
    width = crops[..., 2] - crops[..., 0]
    height = crops[..., 3] - crops[..., 1]
    return np.stack(
        [
            (box[0] - crops[..., 0]) / width,
            (box[1] - crops[..., 1]) / height,
            (box[2] - crops[..., 0]) / width,
            (box[3] - crops[..., 1]) / height,
        ],
        axis=-1,
    )


def boxes_from_targets(crops: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Inverse of :func:`box_targets`: boxes in pixels from crop-relative targets."""
    crops = np.asarray(crops, np.float64)
    width = (crops[..., 2] - crops[..., 0])[..., None]
    height = (crops[..., 3] - crops[..., 1])[..., None]
    origin = np.stack([crops[..., 0], crops[..., 1], crops[..., 0], crops[..., 1]], axis=-1)
    size = np.concatenate([width, height, width, height], axis=-1)
    return origin + np.asarray(targets, np.float64) * size


@dataclass(frozen=True)
class TargetScaler:
    """Standardisation of regression targets by the training set's mean and std.

    Why: the four corners have different ranges (a left edge sits near 0, a right edge near
    1 or beyond); equal-scale targets let one loss weigh them equally.
    """

    mean: tuple[float, float, float, float]
    std: tuple[float, float, float, float]

    @classmethod
    def fit(cls, targets: np.ndarray) -> TargetScaler:
        targets = np.asarray(targets, np.float64).reshape(-1, 4)
        if len(targets) < 2:
            raise ValueError("need at least two foreground windows to standardise targets")
        std = np.maximum(targets.std(axis=0), 1e-6)
        return cls(tuple(targets.mean(axis=0).tolist()), tuple(std.tolist()))

    def standardise(self, targets: np.ndarray) -> np.ndarray:
        return (np.asarray(targets, np.float64) - self.mean) / self.std

    def restore(self, standardised: np.ndarray) -> np.ndarray:
        return np.asarray(standardised, np.float64) * self.std + self.mean


# -- train/test split by image ---------------------------------------------------------------


def split_by_image(strata: Mapping[str, str], *, test_fraction: float, seed: int) -> dict[str, str]:
    """``image_id → "train" | "test"``; every image in exactly one split.

    Stratified: within each stratum (a category, or a box-size bucket) a seeded shuffle puts
    ``round(n · test_fraction)`` images in test — at least one when the stratum has two or
    more, so small strata are represented on both sides. The order of ``strata`` does not
    matter: images are sorted first.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    groups: dict[str, list[str]] = {}
    for image_id in sorted(strata):
        groups.setdefault(strata[image_id], []).append(image_id)
    split: dict[str, str] = {}
    for stratum, members in sorted(groups.items()):
        digest = hashlib.sha256(f"{seed}\0{stratum}".encode()).digest()
        random.Random(digest).shuffle(members)
        n_test = round(len(members) * test_fraction)
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        for i, image_id in enumerate(members):
            split[image_id] = "test" if i < n_test else "train"
    return split


# -- heads -----------------------------------------------------------------------------------


def _branch(reduced: int, hidden: int, kernel: tuple[int, int], out: int, dropout: float):
    return nn.Sequential(
        nn.Conv2d(reduced, hidden, kernel),  # the first fully connected layer, as a convolution
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout),
        nn.Conv2d(hidden, hidden, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, out, 1),
    )


class LocatorHeads(nn.Module):
    """P(object) and the four box coordinates at every window position of encoder maps.

    A shared 1×1 convolution first reduces the encoder's channels (1280 for EfficientNet-
    Lite0): the heads then have ~10× fewer weights than a ``kernel``-sized layer over all
    channels, which matters with a few hundred annotated photos. Inputs are standardised per
    channel by the training maps' statistics (buffers, saved with the weights).
    """

    # The buffers registered in __init__, declared for the type checker (which otherwise
    # sees nn.Module.__getattr__'s Tensor | Module).
    channel_mean: torch.Tensor
    channel_std: torch.Tensor

    def __init__(
        self,
        channels: int,
        kernel: tuple[int, int],
        *,
        reduced: int = 64,
        hidden: int = 128,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        rows, cols = kernel  # a list when read back from JSON
        self.kernel = (rows, cols)
        self.register_buffer("channel_mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("channel_std", torch.ones(1, channels, 1, 1))
        self.reduce = nn.Sequential(nn.Conv2d(channels, reduced, 1), nn.ReLU(inplace=True))
        self.classifier = _branch(reduced, hidden, self.kernel, 1, dropout)
        self.regressor = _branch(reduced, hidden, self.kernel, 4, dropout)

    def set_channel_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Why a floor on the std: a channel that is (almost) dead on the training photos
        would otherwise turn a faint activation on a new photo into a huge input."""
        floor = max(1e-3, 0.1 * float(std.median()))
        self.channel_mean.copy_(mean.view_as(self.channel_mean))
        self.channel_std.copy_(std.clamp_min(floor).view_as(self.channel_std))

    def forward(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W) → logits (N, H−kh+1, W−kw+1) and standardised targets (N, 4, …)."""
        x = self.reduce((maps - self.channel_mean) / self.channel_std)
        return self.classifier(x)[:, 0], self.regressor(x)


# -- inference -------------------------------------------------------------------------------


#: The low-confidence rule's defaults (see the module docstring): the seed's rule wherever
#: one position passes the threshold, else the five best positions, weighted by P.
MIN_POSITIONS = 1
BEST_POSITIONS = 5


@dataclass(frozen=True)
class LocatedBox:
    """One photo's box: pixels of the oriented image, how sure, and how it was decided."""

    box: tuple[int, int, int, int]
    score: float  # mean P(object) of the kept positions; 0 when falling back
    positions_kept: int
    fallback: bool  # no window at all: the whole photo
    low_confidence: bool = False  # too few positions passed: the best ones, weighted by P

    def as_dict(self) -> dict[str, object]:
        return {
            "box": list(self.box),
            "score": round(self.score, 4),
            "positions_kept": self.positions_kept,
            "fallback": self.fallback,
            "low_confidence": self.low_confidence,
        }


def average_box(
    boxes: np.ndarray, width: int, height: int, weights: np.ndarray | None = None
) -> tuple[int, int, int, int]:
    """Mean of ``boxes`` (N, 4) (weighted by ``weights`` when given), clipped to the image
    and rounded to whole pixels."""
    left, top, right, bottom = np.average(np.asarray(boxes, np.float64), axis=0, weights=weights)
    left, right = np.clip([left, right], 0, width)
    top, bottom = np.clip([top, bottom], 0, height)
    box = (round(left), round(top), round(right), round(bottom))
    if box[2] <= box[0] or box[3] <= box[1]:
        return (0, 0, width, height)
    return box


@torch.inference_mode()
def locate_in_maps(
    heads: LocatorHeads,
    maps: Sequence[tuple[torch.Tensor, tuple[float, float]]],
    *,
    geometry: WindowGeometry,
    scaler: TargetScaler,
    image_size: tuple[int, int],
    threshold: float = 0.8,
    min_positions: int = MIN_POSITIONS,
    best_positions: int = BEST_POSITIONS,
) -> LocatedBox:
    """The box of one photo from its whole-image maps at one or more input scales, by the
    rule of the module docstring (seed's average, else low confidence, else fallback).

    ``maps``: per scale, the encoder output (C, H, W) or (1, C, H, W) and that input's scale
    (input pixels per original pixel, x and y).
    """
    if min_positions < 1 or best_positions < 1:
        raise ValueError(f"min_positions {min_positions}, best_positions {best_positions}: ≥ 1")
    width, height = image_size
    all_boxes: list[np.ndarray] = []
    all_probs: list[np.ndarray] = []
    for fmap, scale_xy in maps:
        fmap = fmap if fmap.dim() == 4 else fmap.unsqueeze(0)
        rows, cols = geometry.head_grid(fmap.shape[2], fmap.shape[3])
        if rows == 0 or cols == 0:
            continue  # this scale's input is smaller than one window
        logits, targets = heads(fmap.float())
        windows = geometry.windows(fmap.shape[2], fmap.shape[3], scale_xy)
        restored = scaler.restore(targets[0].permute(1, 2, 0).cpu().numpy())
        all_boxes.append(boxes_from_targets(windows, restored).reshape(-1, 4))
        all_probs.append(torch.sigmoid(logits[0]).cpu().numpy().reshape(-1).astype(np.float64))
    if not all_boxes:
        return LocatedBox((0, 0, width, height), 0.0, 0, fallback=True)
    boxes = np.concatenate(all_boxes)
    probs = np.concatenate(all_probs)
    keep = probs >= threshold
    if int(keep.sum()) >= min_positions:
        box = average_box(boxes[keep], width, height)
        return LocatedBox(box, float(probs[keep].mean()), int(keep.sum()), fallback=False)
    # Stable sort: among equal probabilities the earlier scale and position win (deterministic).
    best = np.argsort(-probs, kind="stable")[:best_positions]
    weights = np.maximum(probs[best], 1e-12)  # all ~0 still averages the best boxes
    box = average_box(boxes[best], width, height, weights)
    return LocatedBox(box, float(probs[best].mean()), len(best), False, low_confidence=True)
