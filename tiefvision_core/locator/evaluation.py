"""How good are the boxes: IoU against the truth, side by side with naive baselines, and
pictures a person can check at a glance.

Baselines (why these two): *whole image* is what every stage uses when no locator exists;
*centre crop of median size* is the best box that ignores the photo's content — a locator
that cannot beat it has learnt the catalog's framing, not where the product is.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

__all__ = [
    "BoxScores",
    "LocatorEvaluation",
    "centre_median_boxes",
    "draw_box_grid",
    "evaluate_boxes",
    "iou",
    "iou_histogram_png",
    "png_bytes",
]

_COORDS = ["left", "top", "right", "bottom"]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``a`` and ``b`` (..., 4), elementwise."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-12)


@dataclass(frozen=True)
class BoxScores:
    mean_iou: float
    share_iou_05: float
    share_iou_07: float

    @classmethod
    def of(cls, ious: np.ndarray) -> BoxScores:
        return cls(
            round(float(np.mean(ious)), 4),
            round(float(np.mean(ious >= 0.5)), 4),
            round(float(np.mean(ious >= 0.7)), 4),
        )


@dataclass(frozen=True)
class LocatorEvaluation:
    images: int
    locator: BoxScores
    whole_image: BoxScores
    centre_median: BoxScores
    fallbacks: int
    per_image: pd.DataFrame  # image_id, iou, iou_whole, iou_centre, fallback, low_confidence
    low_confidence: int = 0  # boxes from the best positions, none passing the threshold

    def as_dict(self) -> dict[str, object]:
        return {
            "images": self.images,
            "fallbacks": self.fallbacks,
            "low_confidence": self.low_confidence,
            "locator": asdict(self.locator),
            "whole_image": asdict(self.whole_image),
            "centre_median": asdict(self.centre_median),
        }

    def table(self) -> list[dict[str, object]]:
        """Rows for a report: the locator and both baselines side by side."""
        return [
            {"boxes": name, **asdict(scores)}
            for name, scores in (
                ("locator", self.locator),
                ("whole image", self.whole_image),
                ("centre crop, median size", self.centre_median),
            )
        ]


def centre_median_boxes(
    sizes: np.ndarray, reference_boxes: np.ndarray, reference_sizes: np.ndarray
) -> np.ndarray:
    """Centred boxes whose width/height share of the photo is the reference set's median."""
    sizes = np.asarray(sizes, np.float64)
    ref = np.asarray(reference_boxes, np.float64)
    ref_sizes = np.asarray(reference_sizes, np.float64)
    share_w = np.median((ref[:, 2] - ref[:, 0]) / ref_sizes[:, 0])
    share_h = np.median((ref[:, 3] - ref[:, 1]) / ref_sizes[:, 1])
    half_w, half_h = sizes[:, 0] * share_w / 2, sizes[:, 1] * share_h / 2
    cx, cy = sizes[:, 0] / 2, sizes[:, 1] / 2
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)


def evaluate_boxes(
    predicted: pd.DataFrame, truth: pd.DataFrame, reference: pd.DataFrame
) -> LocatorEvaluation:
    """Score ``predicted`` boxes (image_id, left…bottom, fallback, low_confidence; both
    flags false when absent, as in records written before the flag) against ``truth``
    (image_id, left…bottom, width, height) on the images both have; ``reference`` (boxes
    with width and height, e.g. the training annotations) sets the median-size baseline."""
    flags = ["fallback", "low_confidence"]
    predicted = predicted.assign(
        **{flag: predicted[flag].fillna(False) if flag in predicted else False for flag in flags}
    )
    joined = truth.merge(
        predicted[["image_id", *_COORDS, *flags]], on="image_id", suffixes=("", "_pred")
    )
    if joined.empty:
        raise ValueError("no image has both a predicted and a true box")
    true = joined[_COORDS].to_numpy(np.float64)
    pred = joined[[f"{c}_pred" for c in _COORDS]].to_numpy(np.float64)
    sizes = joined[["width", "height"]].to_numpy(np.float64)
    whole = np.concatenate([np.zeros_like(sizes), sizes], axis=1)
    centre = centre_median_boxes(
        sizes, reference[_COORDS].to_numpy(), reference[["width", "height"]].to_numpy()
    )
    per_image = pd.DataFrame(
        {
            "image_id": joined["image_id"],
            "iou": iou(pred, true),
            "iou_whole": iou(whole, true),
            "iou_centre": iou(centre, true),
            "fallback": joined["fallback"].astype(bool),
            "low_confidence": joined["low_confidence"].astype(bool),
        }
    )
    return LocatorEvaluation(
        images=len(joined),
        locator=BoxScores.of(per_image["iou"].to_numpy()),
        whole_image=BoxScores.of(per_image["iou_whole"].to_numpy()),
        centre_median=BoxScores.of(per_image["iou_centre"].to_numpy()),
        fallbacks=int(per_image["fallback"].sum()),
        per_image=per_image,
        low_confidence=int(per_image["low_confidence"].sum()),
    )


def draw_box_grid(
    items: Sequence[tuple[Image.Image, Sequence[float], Sequence[float], float]],
    *,
    columns: int = 6,
    tile: int = 200,
) -> Image.Image:
    """Thumbnails with the true box (green) and the predicted box (red), IoU underneath."""
    rows = max(1, -(-len(items) // columns))
    caption = 16
    sheet = Image.new("RGB", (columns * tile, rows * (tile + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (image, true_box, pred_box, score) in enumerate(items):
        scale = tile / max(image.size)
        thumb = image.convert("RGB").resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        )
        x0 = (n % columns) * tile + (tile - thumb.width) // 2
        y0 = (n // columns) * (tile + caption) + (tile - thumb.height) // 2
        sheet.paste(thumb, (x0, y0))
        for box, colour in ((true_box, (0, 170, 0)), (pred_box, (220, 0, 0))):
            left, top, right, bottom = (float(v) * scale for v in box)
            draw.rectangle([x0 + left, y0 + top, x0 + right, y0 + bottom], outline=colour, width=2)
        draw.text(
            ((n % columns) * tile + 4, (n // columns) * (tile + caption) + tile + 2),
            f"IoU {score:.2f}",
            fill=(0, 0, 0),
        )
    return sheet


def iou_histogram_png(evaluation: LocatorEvaluation, *, bins: int = 20) -> bytes:
    """Histogram of per-image IoU, locator against the whole-image baseline (PNG bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    edges = np.linspace(0, 1, bins + 1).tolist()
    axes.hist(evaluation.per_image["iou_whole"], bins=edges, alpha=0.5, label="whole image")
    axes.hist(evaluation.per_image["iou_centre"], bins=edges, alpha=0.5, label="centre, median")
    axes.hist(evaluation.per_image["iou"], bins=edges, alpha=0.7, label="locator")
    axes.axvline(0.5, color="grey", linestyle=":")
    axes.set_xlabel("IoU with the true box")
    axes.set_ylabel("images")
    axes.set_title(f"{evaluation.images} held-out images, mean IoU {evaluation.locator.mean_iou}")
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()
