"""Similarity search by an uploaded photo: decoded safely, located by the current locator,
cropped, encoded on the canonical grid (projected for the supervised space), searched.

Its own module because it needs torch (the encoder, the locator), which a search by id
must never import; callers import these names from :mod:`tiefvision_core.index.search`,
the one search API, which loads this module on first use. The locator and the projection
are loaded once per version (:mod:`tiefvision_core.index.models`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from tiefvision_core.catalog.imaging import DecodedPhoto, ImageInfo, decode_photo
from tiefvision_core.catalog.live import LiveCatalog
from tiefvision_core.encoders import Encoder
from tiefvision_core.encoding.pixels import encode_crops
from tiefvision_core.errors import IncompatibleModel
from tiefvision_core.index.models import current_locator
from tiefvision_core.index.search import SearchResult, search_vector
from tiefvision_core.index.spaces import space_transform
from tiefvision_core.locator.locate import locate_image
from tiefvision_core.locator.model_files import LocatorModel
from tiefvision_core.similarity.unsupervised import similarity_grid, similarity_vectors
from tiefvision_core.storage.stores import Store
from tiefvision_core.vector_index.versions import OpenedIndex

__all__ = [
    "QUERY_SCALES",
    "QueryPhoto",
    "query_box",
    "query_scales",
    "read_query_photo",
    "search_by_image",
    "search_by_photo",
]


#: The locator's input sides an upload is looked at, of those the model was trained with
#: (a model with none of them is looked at with all of its own). Measured by
#: ``bench/upload_quality.py`` (docs/benchmarks.md): dropping the 320 side keeps mean IoU and
#: mAP@10 within 0.003 of all three scales and cuts locate + encode by ≈ 20 %; dropping
#: 576 instead loses 0.09 IoU.
QUERY_SCALES: tuple[int, ...] = (448, 576)


def query_scales(trained: Sequence[int], wanted: Sequence[int] | None = None) -> tuple[int, ...]:
    """The scales an upload is located at: ``wanted`` among the ``trained`` ones, in trained
    order; all trained ones when none of them is wanted. By default :data:`QUERY_SCALES`
    and any trained side above them: a side the crops dataset added because the products
    are narrow (``locator.crops.fit_scales``) is the one their windows fit at."""
    if wanted is None:
        chosen = tuple(s for s in trained if s in QUERY_SCALES or s > max(QUERY_SCALES))
    else:
        chosen = tuple(side for side in trained if side in wanted)
    return chosen or tuple(trained)


def query_box(
    store: Store,
    encoder: Encoder,
    image: Image.Image,
    *,
    scales: Sequence[int] | None = None,
    size: tuple[int, int] | None = None,
) -> list[int]:
    """Where the product is in an uploaded photo: the current locator when it was trained
    on this encoder, else the whole photo (never a wrong-space box). ``scales``: see
    :func:`query_scales`; ``size``: the photo's own size when ``image`` was decoded smaller
    (the box is then in the photo's pixels)."""
    model = current_locator(store, encoder)
    return _located(model, encoder, image, _chosen(model, scales), size or image.size)


def _chosen(model: LocatorModel | None, scales: Sequence[int] | None) -> tuple[int, ...]:
    return () if model is None else query_scales(model.scales, scales)


def _located(
    model: LocatorModel | None,
    encoder: Encoder,
    image: Image.Image,
    chosen: tuple[int, ...],
    size: tuple[int, int],
) -> list[int]:
    if model is None:
        return [0, 0, *size]
    box = locate_image(model, encoder, image, scales=chosen, size=size).box
    return [int(v) for v in box]


@dataclass(frozen=True)
class QueryPhoto:
    """An uploaded photo as its search needs it: ``decoded`` (possibly smaller than the
    photo) and ``box``, where the product is, in the photo's own pixels."""

    decoded: DecodedPhoto
    box: list[int]

    @property
    def info(self) -> ImageInfo:
        return self.decoded.info


def _crop_min_side(info: ImageInfo, box: Sequence[int], crop_size: int) -> int:
    """The shorter photo side to decode at so ``box`` still spans ≥ ``crop_size`` pixels on
    its shorter side: the rule the catalog's crops are decoded by (``CropRequest``)."""
    shortest_box = max(1, min(box[2] - box[0], box[3] - box[1]))
    return -(-min(info.width, info.height) * crop_size // shortest_box)


def read_query_photo(
    store: Store,
    encoder: Encoder,
    data: bytes,
    *,
    max_pixels: int,
    scales: Sequence[int] | None = None,
) -> QueryPhoto:
    """Decode an upload at the smallest size its search needs, and locate the product.

    Why not at full size: the locator looks at the photo at most ``max(scales)`` pixels
    long and the encoder at its box resized to ``crop_size``; a 25 MP JPEG decoded whole is
    75 MB of pixels for a 576-pixel look, so it is decoded at the DCT scale (1/8 here) that
    still covers both. A box too small for the encoder at that scale (a small product in a
    large photo) is decoded again, as large as a catalog crop of that box would be. The
    pixel limit (``max_pixels``, the setting's) is checked on the header first.
    """
    model = current_locator(store, encoder)
    chosen = _chosen(model, scales)
    crop = encoder.preprocessing.crop_size
    decoded = decode_photo(
        data, max_pixels=max_pixels, min_side=crop, min_longer_side=max(chosen, default=0)
    )
    info = decoded.info
    box = _located(model, encoder, decoded.image, chosen, (info.width, info.height))
    needed = _crop_min_side(info, box, crop)
    if decoded.reduced and min(decoded.image.size) < needed:
        decoded = decode_photo(data, max_pixels=max_pixels, min_side=needed)
    return QueryPhoto(decoded, box)


def _check_encoder(opened: OpenedIndex, encoder: Encoder) -> dict:
    """The index's source metadata, once its vectors are known to come from ``encoder``."""
    source = opened.metadata.get("source", {})
    if source.get("encoder_version") not in (None, encoder.version):
        raise IncompatibleModel(
            f"the {opened.space} index {opened.version} holds {source['encoder_version']} "
            f"vectors, but the query was encoded with {encoder.version}"
        )
    return source


def search_by_image(
    store: Store,
    opened: OpenedIndex,
    encoder: Encoder,
    data: bytes,
    *,
    max_pixels: int,
    k: int = 10,
    where: dict[str, str] | None = None,
    scales: Sequence[int] | None = None,
    live: LiveCatalog | None = None,
) -> SearchResult:
    """Neighbours of an uploaded photo: decoded safely (within ``max_pixels``, the setting's
    limit), located (at ``scales`` of the locator's, default :data:`QUERY_SCALES`),
    cropped, encoded on the canonical grid, (projected for a supervised space) and searched.
    ``live``: the live catalog, whose removed and re-shot photos are never answered (see
    ``search_by_id``)."""
    _check_encoder(opened, encoder)
    photo = read_query_photo(store, encoder, data, max_pixels=max_pixels, scales=scales)
    return search_by_photo(store, opened, encoder, photo, k=k, where=where, live=live)


def search_by_photo(
    store: Store,
    opened: OpenedIndex,
    encoder: Encoder,
    photo: QueryPhoto,
    *,
    k: int = 10,
    where: dict[str, str] | None = None,
    live: LiveCatalog | None = None,
) -> SearchResult:
    """Neighbours of a photo :func:`read_query_photo` decoded and located."""
    source = _check_encoder(opened, encoder)
    crop = photo.decoded.to_decoded(photo.box)
    maps = similarity_grid(encode_crops(encoder, [photo.decoded.image], [crop]).cpu().numpy())
    transform = space_transform(store, opened.space, encoder, source)
    if transform is not None:
        maps = transform(maps)
    query = similarity_vectors(maps)[0]
    hits = search_vector(opened, query, k, where=where, live=live)
    return SearchResult(opened.space, opened.version, hits, photo.box)
