"""Uploaded photos: size cap while the body arrives, then the same checks as ingest.

Why a body limit in front of the app: FastAPI parses a multipart body completely (spooling
files to disk) before an endpoint sees it, so a cap checked in the endpoint would still let
anyone fill the disk. :class:`BodySizeLimit` refuses a declared ``Content-Length`` over the
cap at once and counts the bytes of a chunked body as they come. The photo is then judged
by its content, never its name or declared type: ingest's decoder and checks (every byte
decoded, so truncation is caught; the decompression-bomb guard of
``TIEFVISION_MAX_IMAGE_PIXELS`` applied from the header, before any pixel is), at the
smallest scale the search needs (:func:`read_query_photo`), and only the formats a catalog
holds are accepted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tiefvision_core.errors import ImageRejected
from tiefvision_core.index.search import QueryPhoto, read_query_photo

if TYPE_CHECKING:
    from tiefvision_core.encoders import Encoder
    from tiefvision_core.storage.stores import Store

__all__ = [
    "ACCEPTED_FORMATS",
    "BodySizeLimit",
    "BodyTooLarge",
    "check_size",
    "read_upload",
    "rejected_as_http",
]

#: Formats judged by content (Pillow's identification of the bytes, not a file name).
ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF")
#: Room for the multipart envelope (boundaries, part headers) around the photo itself.
_ENVELOPE = 64 * 1024


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"the upload is larger than {limit:,} bytes: send a smaller photo "
            "(the limit is TIEFVISION_MAX_UPLOAD_BYTES)",
        )


class BodySizeLimit:
    """ASGI middleware: request bodies over ``limit`` (+ the multipart envelope) get 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        allowed = self.limit + _ENVELOPE
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > allowed:
            await _refuse(send, BodyTooLarge(self.limit))
            return
        seen, refused = 0, False

        async def counted() -> Message:
            # Over the cap: answer 413 here and tell the app the client left, so whatever
            # it was parsing stops; anything it tries to send after that is dropped.
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > allowed:
                    refused = True
                    await _refuse(send, BodyTooLarge(self.limit))
                    return {"type": "http.disconnect"}
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, unless_refused)


async def _refuse(send: Send, error: HTTPException) -> None:
    import json

    body = json.dumps({"detail": error.detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def check_size(data: bytes, limit: int) -> None:
    """413 for a photo over ``limit`` bytes (``data`` was read up to one byte more)."""
    if len(data) > limit:
        raise BodyTooLarge(limit)


def read_upload(store: Store, encoder: Encoder, data: bytes, *, max_pixels: int) -> QueryPhoto:
    """The photo decoded and located for its search, or the HTTP error that says what is
    wrong with it. Decoded here, within ``max_pixels`` (the configured limit), and never
    again by the search: the returned photo is what
    :func:`~tiefvision_core.index.search.search_by_photo` encodes."""
    try:
        photo = read_query_photo(store, encoder, data, max_pixels=max_pixels)
    except ImageRejected as rejected:
        raise rejected_as_http(rejected) from None
    if photo.info.format not in ACCEPTED_FORMATS:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"{photo.info.format} images are not accepted: send a JPEG, PNG, WebP, GIF, BMP "
            "or TIFF",
        )
    return photo


def rejected_as_http(rejected: ImageRejected) -> HTTPException:
    """An unusable image as an HTTP error: what is wrong with it, never a traceback."""
    code = {
        "empty_file": status.HTTP_400_BAD_REQUEST,
        "not_an_image": status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        "too_many_pixels": status.HTTP_413_CONTENT_TOO_LARGE,
    }.get(rejected.reason, status.HTTP_422_UNPROCESSABLE_CONTENT)
    hint = {
        "empty_file": "the upload has no bytes: choose a photo",
        "not_an_image": "the content is not an image (the file name does not matter): "
        "send a JPEG, PNG, WebP, GIF, BMP or TIFF",
        "too_many_pixels": "the photo has more pixels than TIEFVISION_MAX_IMAGE_PIXELS "
        "allows (decompression-bomb guard)",
    }.get(rejected.reason, "the image data cannot be decoded: send an undamaged photo")
    return HTTPException(code, f"{hint} ({rejected.reason}: {rejected.detail})")
