"""What the encoding runtime is asked and what it returns: one image to encode
(:class:`CropRequest`), how a decoding worker reads, verifies and decodes it
(:class:`CropDataset`, :func:`collate`), and the maps of one forward pass
(:class:`EncodedBatch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tiefvision_core.catalog.imaging import decode_image
from tiefvision_core.encoding.pixels import Box, crop_pixels, to_tensor, whole_input_size
from tiefvision_core.errors import ImageRejected, StorageNotFound
from tiefvision_core.storage.urls import DEFAULT_MAX_BYTES, read_source

__all__ = ["CropDataset", "CropRequest", "EncodedBatch", "Groups", "collate"]


@dataclass(frozen=True)
class CropRequest:
    """One image to encode: where its bytes are, what they must hash to, which box.

    ``width``/``height`` are the oriented size recorded at ingest; ``box`` is in those pixels
    (``None`` = the whole image). ``whole_side`` asks for the fully-convolutional encoding of
    the whole image instead, its longer side resized to that many pixels (see
    :func:`whole_input_size`): what the locator slides over.
    """

    image_id: str
    sha256: str
    uri: str
    width: int
    height: int
    box: Box | None = None
    whole_side: int | None = None

    @classmethod
    def of_row(
        cls,
        row: Mapping[str, Any],
        *,
        uri_column: str = "uri",
        box: Box | None = None,
        whole_side: int | None = None,
    ) -> CropRequest:
        """The request for one row of a plan or manifest table (``image_id``, ``sha256``,
        the ``uri_column``, ``width``, ``height``): the one reading of such a row that the
        encoding shards, the crops dataset and the locate plan share."""
        return cls(
            image_id=row["image_id"],
            sha256=row["sha256"],
            uri=row[uri_column],
            width=int(row["width"]),
            height=int(row["height"]),
            box=box,
            whole_side=whole_side,
        )

    @property
    def full_box(self) -> Box:
        return self.box if self.box is not None else (0, 0, self.width, self.height)

    def whole_size(self, multiple: int) -> tuple[int, int]:
        """The input size of a ``whole_side`` request."""
        if self.whole_side is None:
            raise ValueError("not a whole-image request")
        return whole_input_size(self.width, self.height, side=self.whole_side, multiple=multiple)

    def decode_min_side(self, crop_size: int) -> int:
        """The shorter image side to decode at so the box still spans ≥ ``crop_size`` pixels
        on its shorter side: a 4000×3000 photo of a 1000-px box decodes at 1/4 (JPEG draft).
        Orientation-free, since it bounds the shorter side whichever way the photo turns."""
        if self.whole_side is not None:
            return int(
                np.ceil(
                    min(self.width, self.height) * self.whole_side / max(self.width, self.height)
                )
            )
        left, top, right, bottom = self.full_box
        shortest_box = max(1, min(right - left, bottom - top))
        return int(np.ceil(min(self.width, self.height) * crop_size / shortest_box))


@dataclass
class EncodedBatch:
    """Output of one forward pass: maps for the decodable requests, reasons for the rest."""

    requests: list[CropRequest]
    maps: np.ndarray  # (n, C, H, W) float32, rows aligned with ``requests``
    flipped: np.ndarray  # (n,) bool
    rejects: list[tuple[CropRequest, str, str]]  # request, reason, detail


class CropDataset(Dataset):
    """Reads, verifies and decodes one request per item, in a worker process.

    A bad item returns its reason instead of raising: one vanished or changed file must not
    stop the other 255 of its shard. Bytes come through :func:`read_source`: a FIFO or an
    oversized file swapped in since ingest is a reason, never a hung or bloated worker.
    """

    def __init__(
        self,
        requests: Sequence[CropRequest],
        size: int,
        max_pixels: int,
        multiple: int,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.requests, self.size, self.max_pixels = list(requests), size, max_pixels
        self.multiple, self.max_bytes = multiple, max_bytes

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str, str]:
        request = self.requests[index]
        try:
            data = read_source(request.uri, sha256=request.sha256, max_bytes=self.max_bytes)
        except StorageNotFound:
            return index, None, "vanished", "the file is gone since ingest; rerun ingest"
        except ImageRejected as rejected:  # changed_since_ingest, not_a_regular_file, …
            return index, None, rejected.reason, rejected.detail
        try:
            image = decode_image(
                data, max_pixels=self.max_pixels, min_side=request.decode_min_side(self.size)
            )
            if request.whole_side is not None:
                size = request.whole_size(self.multiple)
                resized = image.resize(size, Image.Resampling.BILINEAR)
                return index, to_tensor(resized), "", ""
            scale = image.size[0] / request.width
            left, top, right, bottom = (round(v * scale) for v in request.full_box)
            return index, crop_pixels(image, (left, top, right, bottom), self.size), "", ""
        except ImageRejected as rejected:
            return index, None, rejected.reason, rejected.detail
        except ValueError as error:
            return index, None, "bad_box", str(error)


#: Decoded inputs stacked by shape: (the items' indexes, their stacked pixels) per shape.
Groups = list[tuple[list[int], torch.Tensor]]


def collate(items: list[tuple[int, torch.Tensor | None, str, str]]) -> tuple[Groups, list]:
    """Decoded items stacked by input shape (fixed-grid crops: one group; whole images of
    several aspect ratios: one group per shape), and the failures with their reasons."""
    by_shape: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
    for i, tensor, _, _ in items:
        if tensor is not None:
            by_shape.setdefault(tuple(tensor.shape), []).append((i, tensor))
    groups = [
        ([i for i, _ in good], torch.stack([t for _, t in good])) for good in by_shape.values()
    ]
    bad = [(i, reason, detail) for i, t, reason, detail in items if t is None]
    return groups, bad
