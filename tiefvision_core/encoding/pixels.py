"""Pixels → feature maps for one image: the two inputs an encoder takes, and the simple API
that encodes a few crops (a query photo).

* **fixed grid** (:func:`crop_pixels`): a box of the image is resized to the encoder's
  canonical square (224×224), so every crop of every image yields the same H×W grid —
  what similarity compares position by position.
* **whole image** (:func:`whole_pixels`): the image keeps its aspect ratio and the network
  runs fully convolutionally, one encoding per position — what the locator slides over.

A catalog's thousands of crops stream through
:class:`~tiefvision_core.encoding.runtime.EncodingRuntime` instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from tiefvision_core.encoders import Encoder

__all__ = [
    "Box",
    "crop_pixels",
    "encode_crops",
    "encode_whole",
    "l2_normalise_positions",
    "to_tensor",
    "whole_input_size",
    "whole_pixels",
]

Box = tuple[int, int, int, int]  # left, top, right, bottom, in pixels of the oriented image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """HWC uint8 PIL → CHW uint8 tensor (no float conversion: that happens on the device)."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def crop_pixels(
    image: Image.Image, box: Box | None, size: int, *, flip: bool = False
) -> torch.Tensor:
    """The fixed-grid input: ``box`` of ``image`` resized to ``size``×``size`` (uint8 CHW).

    ``box=None`` is the whole image. The box is clipped to the image; an empty box is a bug
    upstream, so it raises rather than encoding nothing.
    """
    width, height = image.size
    left, top, right, bottom = box if box is not None else (0, 0, width, height)
    left, top = max(0, int(left)), max(0, int(top))
    right, bottom = min(width, int(right)), min(height, int(bottom))
    if right <= left or bottom <= top:
        raise ValueError(f"empty crop box {box} for a {width}×{height} image")
    crop = image.crop((left, top, right, bottom)).resize((size, size), Image.Resampling.BILINEAR)
    if flip:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor(crop)


def whole_input_size(width: int, height: int, *, side: int, multiple: int) -> tuple[int, int]:
    """The fully-convolutional input size of a ``width``×``height`` image: aspect kept, the
    longer side ``side``, both sides a multiple of the encoder's stride (so positions tile
    the input exactly). A pure function of the manifest's size, so whoever maps positions
    back to pixels later computes the same numbers without the image.
    """
    scale = side / max(width, height)
    return (
        max(multiple, round(width * scale / multiple) * multiple),
        max(multiple, round(height * scale / multiple) * multiple),
    )


def whole_pixels(
    image: Image.Image, *, side: int, multiple: int, upscale: bool = True
) -> tuple[torch.Tensor, float]:
    """The fully-convolutional input (uint8 CHW) and the scale from original to input pixels.

    ``upscale=False`` caps the longer side at the image's own (``side`` is then a maximum).
    """
    width, height = image.size
    if not upscale:
        side = min(side, max(width, height))
    new_w, new_h = whole_input_size(width, height, side=side, multiple=multiple)
    resized = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    return to_tensor(resized), new_w / width


def l2_normalise_positions(maps: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Unit length along channels at every position of (N, C, H, W) maps.

    Why per position: the seed's similarity is the mean cosine of corresponding positions,
    so each position must weigh the same whatever its activation energy.
    """
    return maps / maps.norm(dim=1, keepdim=True).clamp_min(eps)


@torch.inference_mode()
def encode_crops(
    encoder: Encoder,
    images: Sequence[Image.Image],
    boxes: Sequence[Box | None],
    *,
    flip: bool = False,
) -> torch.Tensor:
    """Fixed-grid encodings of a few crops (N, C, H, W) on the encoder's device; the simple
    API for a query image. Catalogs go through :class:`EncodingRuntime`."""
    size = encoder.preprocessing.crop_size
    batch = torch.stack(
        [crop_pixels(im, box, size, flip=flip) for im, box in zip(images, boxes, strict=True)]
    )
    return encoder.encode_maps(batch.to(encoder.device)).float()


@torch.inference_mode()
def encode_whole(
    encoder: Encoder, image: Image.Image, *, max_side: int = 1024
) -> tuple[torch.Tensor, float]:
    """Whole-image encoding (1, C, H', W') and the scale from original pixels to the input."""
    pixels, scale = whole_pixels(
        image, side=max_side, multiple=encoder.geometry.stride, upscale=False
    )
    return encoder.encode_maps(pixels.unsqueeze(0).to(encoder.device)).float(), scale
