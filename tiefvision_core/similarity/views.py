"""Augmented views of a catalog photo: the free positives of issue 30, item 1.

Why: Deep Ranking learns from photos with a product id; every other photo can still teach
it what must *not* change a product's encoding — where the photo was cropped, how large
the product is, the light's colour and strength. A view is the photo cropped to a random
box (a share of its area, a nearby aspect ratio), mirrored or not, and its brightness,
contrast and saturation changed. Its encoding is a positive of the photo's (and of the
photo's product, where it has one); other photos are negatives.

Views are deterministic: the same photo id, view number and seed give the same view on
every machine, so a rerun trains on the same data and a test can name what it expects.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

from PIL import Image, ImageEnhance, ImageOps

__all__ = ["ViewParams", "augmented_view", "view_params"]


@dataclass(frozen=True)
class ViewParams:
    """One view: the crop box in pixels, mirrored or not, and the colour factors (1 = as
    the photo is)."""

    box: tuple[int, int, int, int]
    mirrored: bool
    brightness: float
    contrast: float
    saturation: float


def view_params(
    image_id: str,
    view: int,
    width: int,
    height: int,
    *,
    seed: int = 0,
    min_area: float = 0.5,
    jitter: float = 0.3,
) -> ViewParams:
    """The ``view``-th view of photo ``image_id`` (``width`` × ``height``): a box of
    ``min_area``–1 of the photo's area at an aspect ratio within 3/4–4/3 of the photo's,
    placed at random; mirrored half the time; colour factors within 1 ± ``jitter``."""
    if not 0 < min_area <= 1:
        raise ValueError(f"min_area must be in (0, 1], got {min_area}")
    digest = hashlib.sha256(f"{seed}:{image_id}:{view}".encode()).digest()
    rng = random.Random(digest)
    area = rng.uniform(min_area, 1.0)
    ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    w = max(1, min(width, round(width * math.sqrt(area * ratio))))
    h = max(1, min(height, round(height * math.sqrt(area / ratio))))
    left = rng.randint(0, width - w)
    top = rng.randint(0, height - h)
    return ViewParams(
        (left, top, left + w, top + h),
        rng.random() < 0.5,
        rng.uniform(1 - jitter, 1 + jitter),
        rng.uniform(1 - jitter, 1 + jitter),
        rng.uniform(1 - jitter, 1 + jitter),
    )


def augmented_view(image: Image.Image, params: ViewParams) -> Image.Image:
    """``image`` as ``params`` say (an RGB image of the box's size)."""
    out = image.convert("RGB").crop(params.box)
    if params.mirrored:
        out = ImageOps.mirror(out)
    out = ImageEnhance.Brightness(out).enhance(params.brightness)
    out = ImageEnhance.Contrast(out).enhance(params.contrast)
    return ImageEnhance.Color(out).enhance(params.saturation)
