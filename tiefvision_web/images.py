"""Image bytes for the browser: the original from storage, a thumbnail, a box crop.

Why the server reads the bytes itself instead of redirecting to a presigned S3 URL: the
browser then never sees the bucket, an endpoint, a key id or a signature, and the same code
serves a local folder and a bucket. Thumbnails and crops are decoded with the same guard as
ingest and kept in a small in-memory LRU (a gallery page asks for the same few dozen).

Why every read goes through :func:`read_source` with the manifest's sha256: a source is
trusted only as far as its manifest row. A photo replaced since ingest (by other bytes, by a
link to ``/etc/passwd``, by a FIFO) is answered 409, a vanished one 404, both saying to
ingest again — never the new bytes under the old ETag. The LRU is keyed by that sha256, so
what it holds was checked when it was made.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from fastapi import HTTPException, status

from tiefvision_core.catalog.imaging import decode_image
from tiefvision_core.errors import ImageRejected, StorageNotFound
from tiefvision_core.storage.urls import read_source
from tiefvision_web.catalog_view import CatalogImage
from tiefvision_web.state import WebState

__all__ = ["MEDIA_TYPES", "crop_jpeg", "original_bytes", "thumbnail_jpeg"]

MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
_CACHE_ENTRIES = 512


_REINGEST = "run `tiefvision ingest` for this catalog again to pick up the current photos"


def original_bytes(state: WebState, image: CatalogImage) -> bytes:
    """The photo as ingested (its ``source_uri``; never a path made from the id), checked
    against the manifest's sha256; 409 when the source changed since, 404 when it is gone."""
    try:
        return read_source(
            image.source_uri,
            sha256=image.sha256,
            max_bytes=state.settings.max_image_bytes,
            settings=state.settings,
            interactive=True,
        )
    except ImageRejected as rejected:
        # too_large or unreadable now, though it was a usable photo at ingest: changed too.
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"the photo of {image.image_id!r} is no longer what was ingested "
            f"({rejected.reason}): {_REINGEST}",
        ) from None
    except StorageNotFound:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"the photo of {image.image_id!r} is gone from the catalog source: {_REINGEST}",
        ) from None


def _cached(state: WebState, key: tuple[str, str, int], make) -> bytes:
    with state.thumbnail_lock:
        found = state.thumbnails.get(key)
        if found is not None:
            state.thumbnails.move_to_end(key)
            return found
    data = make()
    with state.thumbnail_lock:
        state.thumbnails[key] = data
        while len(state.thumbnails) > _CACHE_ENTRIES:
            state.thumbnails.popitem(last=False)
    return data


def _jpeg(picture) -> bytes:
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=85)
    return out.getvalue()


def thumbnail_jpeg(state: WebState, image: CatalogImage, side: int) -> bytes:
    """The photo (EXIF-oriented, like its width and height) with its longer side ≤ ``side``."""

    def make() -> bytes:
        data = original_bytes(state, image)
        picture = decode_image(
            data, max_pixels=state.settings.max_image_pixels, max_side=side, min_side=side
        )
        picture.thumbnail((side, side))
        return _jpeg(picture)

    return _cached(state, (image.sha256, "thumb", side), make)


def crop_jpeg(
    state: WebState, image: CatalogImage, box: Sequence[int], side: int | None = None
) -> bytes:
    """The ``box`` of the photo (pixels of the oriented image), optionally shrunk."""
    left, top, right, bottom = (int(v) for v in box)

    def make() -> bytes:
        picture = decode_image(
            original_bytes(state, image), max_pixels=state.settings.max_image_pixels
        )
        picture = picture.crop((left, top, right, bottom))
        if side:
            picture.thumbnail((side, side))
        return _jpeg(picture)

    key = (image.sha256, f"crop:{left},{top},{right},{bottom}", side or 0)
    return _cached(state, key, make)
