"""Similarity search by an uploaded photo: decoded safely, located by the current locator,
cropped, encoded on the canonical grid (projected for the supervised space), searched.

Its own module because it needs torch (the encoder, the locator), which a search by id
(:mod:`tiefvision_core.index.search`) must never import.
"""

from __future__ import annotations

from collections.abc import Sequence

from tiefvision_core.catalog.boxes import as_box
from tiefvision_core.catalog.imaging import decode_image
from tiefvision_core.catalog.live import LiveCatalog
from tiefvision_core.encoders import Encoder
from tiefvision_core.encoding.runtime import encode_crops
from tiefvision_core.errors import IncompatibleModel
from tiefvision_core.index.search import SearchResult, _ints, _search
from tiefvision_core.index.spaces import space_transform
from tiefvision_core.index.versions import OpenedIndex
from tiefvision_core.locator import store as locator_store
from tiefvision_core.similarity.unsupervised import similarity_grid, similarity_vectors
from tiefvision_core.storage.layout import LOCATOR_CURRENT
from tiefvision_core.storage.stores import Store

__all__ = ["QUERY_SCALES", "query_box", "query_scales", "search_by_image"]


#: Locator models by (store, version, encoder version): a version's files never change, so
#: an upload pays for reading CURRENT alone, not for the weights (several store reads, on S3
#: round trips) every time.
_LOCATORS: dict[tuple[str, str, str], object] = {}
_LOCATORS_KEPT = 4


def _current_locator(store: Store, encoder: Encoder):
    version = store.read_pointer(LOCATOR_CURRENT)
    if version is None:
        return None
    key = (store.uri(), version, encoder.version)
    model = _LOCATORS.get(key)
    if model is None:
        try:
            model = locator_store.load_locator(store, version, encoder_version=encoder.version)
        except IncompatibleModel:
            return None
        if len(_LOCATORS) >= _LOCATORS_KEPT:
            _LOCATORS.clear()
        _LOCATORS[key] = model
    return model


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
    store: Store, encoder: Encoder, image, *, scales: Sequence[int] | None = None
) -> list[int]:
    """Where the product is in an uploaded photo: the current locator when it was trained
    on this encoder, else the whole photo (never a wrong-space box). ``scales``: see
    :func:`query_scales`."""
    model = _current_locator(store, encoder)
    if model is None:
        return [0, 0, image.width, image.height]
    chosen = query_scales(model.scales, scales)
    return _ints(locator_store.locate_image(model, encoder, image, scales=chosen).box)


def search_by_image(
    store: Store,
    opened: OpenedIndex,
    encoder: Encoder,
    data: bytes,
    *,
    k: int = 10,
    where: dict[str, str] | None = None,
    scales: Sequence[int] | None = None,
    live: LiveCatalog | None = None,
) -> SearchResult:
    """Neighbours of an uploaded photo: decoded safely, located (at ``scales`` of the
    locator's, default :data:`QUERY_SCALES`), cropped, encoded on the canonical grid,
    (projected for a supervised space) and searched. ``live``: the live catalog, whose
    removed and re-shot photos are never answered (see ``search_by_id``)."""
    source = opened.metadata.get("source", {})
    if source.get("encoder_version") not in (None, encoder.version):
        raise IncompatibleModel(
            f"the {opened.space} index {opened.version} holds {source['encoder_version']} "
            f"vectors, but the query was encoded with {encoder.version}"
        )
    image = decode_image(data)
    box = query_box(store, encoder, image, scales=scales)
    maps = similarity_grid(encode_crops(encoder, [image], [as_box(box)]).cpu().numpy())
    transform = space_transform(store, opened.space, encoder, source)
    if transform is not None:
        maps = transform(maps)
    query = similarity_vectors(maps)[0]
    hits = _search(opened, query, k, None, where, live)
    return SearchResult(opened.space, opened.version, hits, box)
