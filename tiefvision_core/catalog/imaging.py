"""Safe image decoding: the only way bytes from a catalog become pixels.

Why one module: catalogs contain every kind of bad and odd file — empty uploads, HTML error
pages saved as ``.jpg``, truncated transfers, decompression bombs, CMYK and 16-bit scans,
palette PNGs with transparency, phone photos rotated by EXIF. Each stage must treat them the
same way, so a file is judged once, here, by its *content* (never its name), and a bad one
becomes :class:`ImageRejected` with a stable reason code instead of an exception that stops a
nightly run.
"""

from __future__ import annotations

import io
import logging
import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from tiefvision_core.errors import ImageRejected

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FILE_REASONS",
    "REJECT_REASONS",
    "DecodedPhoto",
    "ImageInfo",
    "decode_image",
    "decode_photo",
    "inspect_image",
]

log = logging.getLogger(__name__)

#: Decompression-bomb guard: 80 MP covers a 10k×8k studio shot, refuses crafted headers.
#: The default of ``TIEFVISION_MAX_IMAGE_PIXELS``; the decoders below take the limit as a
#: required argument, so no caller can fall back to this number instead of the setting.
DEFAULT_MAX_PIXELS = 80_000_000

REJECT_REASONS: dict[str, str] = {
    "empty_file": "the file has zero bytes",
    "not_an_image": "the content is not an image format we can read (text, HTML, PDF, …)",
    "truncated": "the image data ends early (incomplete upload or copy)",
    "corrupt": "the format is recognised but its data cannot be decoded",
    "too_many_pixels": "more pixels than the configured limit (decompression-bomb guard)",
    "too_large": "more bytes than the configured limit (TIEFVISION_MAX_IMAGE_BYTES)",
    "not_a_regular_file": "a FIFO, device, socket or folder: never opened for reading",
    "unreadable": "the file cannot be opened (permissions, a link that loops)",
    "outside_source": "a symbolic link that leads out of the source folder (not followed)",
    "changed_since_ingest": "the bytes differ from the manifest: rerun ingest",
    "vanished": "the file is gone (since ingest, or a link whose target is missing)",
}
#: The reasons decided by the file or link (by storage and the source listing), not by the
#: bytes' content: every other reason is judged here.
FILE_REASONS = frozenset(
    {
        "too_large",
        "not_a_regular_file",
        "unreadable",
        "outside_source",
        "changed_since_ingest",
        "vanished",
    }
)

_WHITE = (255, 255, 255)
#: ``warnings.catch_warnings`` swaps process-global state; ingest decodes in threads, so the
#: (cheap) header and EXIF parsing that records warnings is serialised. Pixel decoding is not.
_WARNINGS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ImageInfo:
    """What ingest records about a decodable image."""

    width: int  # after EXIF orientation: what a person (and a box annotator) sees
    height: int
    format: str  # decided by content, e.g. "JPEG", "PNG", "WEBP"
    mode: str  # the original Pillow mode, e.g. "CMYK", "I;16", "P"
    warnings: tuple[str, ...] = ()


#: Leading bytes of the formats Pillow reads; content that starts like an image but that no
#: decoder accepts is *corrupt*, not "not an image".
_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def _sniff(data: bytes) -> str | None:
    """The format the content claims by its signature, or ``None``."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES.items() if data.startswith(magic)), None)


def _declared_truncation(data: bytes) -> bool:
    """Formats that state their own length (RIFF/WebP) tell truncation apart from damage."""
    if data[:4] == b"RIFF" and len(data) >= 8:
        return len(data) < int.from_bytes(data[4:8], "little") + 8
    return False


def _pixel_limit_detail(max_pixels: int, found: str = "more pixels") -> str:
    return f"{found} than the configured limit of {max_pixels:,} (TIEFVISION_MAX_IMAGE_PIXELS)"


def _allow_pillow(max_pixels: int) -> None:
    """Make the configured pixel limit the only one that decides.

    Pillow has its own bomb guard (``Image.MAX_IMAGE_PIXELS``, an error above twice its
    89 MP default) that would silently cap a higher configured limit and reject with its own
    number. It is raised to the configured limit, never lowered: other Pillow users in the
    process keep at least Pillow's default, and ours is checked from the header anyway.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and limit < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _classify(error: Exception, data: bytes, max_pixels: int) -> ImageRejected:
    message = str(error) or type(error).__name__
    if isinstance(error, Image.DecompressionBombError):  # a frame beyond the header's size
        return ImageRejected("too_many_pixels", _pixel_limit_detail(max_pixels))
    if _declared_truncation(data):
        return ImageRejected("truncated", f"data ends early ({message})")
    lowered = message.lower()
    if "truncated" in lowered or "end of file" in lowered or "premature end" in lowered:
        return ImageRejected("truncated", message)
    if isinstance(error, EOFError):
        return ImageRejected("truncated", f"unexpected end of data ({message})")
    return ImageRejected("corrupt", message)


def _exif_notes(caught: list[warnings.WarningMessage]) -> tuple[str, ...]:
    return tuple(f"broken EXIF ignored: {w.message}" for w in caught if "EXIF" in str(w.message))


def _open(data: bytes, max_pixels: int) -> tuple[Image.Image, tuple[str, ...]]:
    """Open (header only) and enforce the pixel limit before any pixel is decoded.

    Also returns notes on EXIF damage that Pillow reports as warnings while parsing headers.
    """
    if not data:
        raise ImageRejected("empty_file", REJECT_REASONS["empty_file"])
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _allow_pillow(max_pixels)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        claimed = _sniff(data)
        if claimed is None:
            raise ImageRejected("not_an_image", "no image format recognises this content") from None
        if _declared_truncation(data):
            raise ImageRejected("truncated", f"{claimed} data ends early") from None
        raise ImageRejected("corrupt", f"starts like {claimed} but cannot be parsed") from None
    except Exception as error:  # Pillow raises many types for broken headers
        raise _classify(error, data, max_pixels) from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageRejected("corrupt", f"invalid size {width}×{height}")
    if width * height > max_pixels:
        raise ImageRejected(
            "too_many_pixels",
            _pixel_limit_detail(max_pixels, f"{width}×{height} = {width * height:,} pixels, more"),
        )
    return image, _exif_notes(caught)


def _load(image: Image.Image, data: bytes, max_pixels: int) -> None:
    try:
        image.load()
    except Exception as error:
        if _declared_truncation(data):
            raise ImageRejected("truncated", f"{image.format} data ends early ({error})") from None
        raise _classify(error, data, max_pixels) from None


_TRANSPOSE = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


def inspect_image(data: bytes, *, max_pixels: int) -> ImageInfo:
    """Decode every pixel (so truncation is caught) and report size, format and mode.

    Raises :class:`ImageRejected` with a code from :data:`REJECT_REASONS`.
    """
    image, open_notes = _open(data, max_pixels)
    fmt, mode = image.format or "UNKNOWN", image.mode
    _load(image, data, max_pixels)
    orientation, notes = _orientation(image)
    notes = open_notes + notes
    width, height = image.size
    if orientation in (5, 6, 7, 8):  # the transposing orientations swap the sides
        width, height = height, width
    return ImageInfo(width, height, fmt, mode, notes)


def _orientation(image: Image.Image) -> tuple[int, tuple[str, ...]]:
    """The EXIF orientation (1 when absent or unreadable) and notes on a broken EXIF block.

    Pillow reports some EXIF damage as a ``UserWarning`` rather than an exception; both
    become notes, since a bad EXIF block never makes the pixels unusable.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            orientation = int(image.getexif().get(0x0112, 1))
        except Exception as error:
            return 1, (f"broken EXIF ignored: {type(error).__name__}: {error}",)
    return (orientation if 1 <= orientation <= 8 else 1), _exif_notes(caught)


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB for a CNN: 16-bit scaled (not clipped), transparency over white."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        if mode == "F":
            top = max(1.0, float(array.max(initial=1.0)))
        gray = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, _WHITE)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if mode != "RGB":
        return image.convert("RGB")
    return image


@dataclass(frozen=True)
class DecodedPhoto:
    """Pixels decoded for a purpose, and the photo they came from.

    ``image`` may be smaller than the photo (JPEG DCT scaling); ``info`` is the photo's own
    oriented size, so boxes found on ``image`` can be told in the photo's pixels — the ones a
    person, the manifest and the API speak of.
    """

    image: Image.Image
    info: ImageInfo

    @property
    def reduced(self) -> bool:
        return self.image.size != (self.info.width, self.info.height)

    def to_decoded(self, box: Sequence[float]) -> tuple[int, int, int, int]:
        """``box`` (left, top, right, bottom) from photo pixels to ``image`` pixels, widened
        to whole pixels (a box never shrinks to nothing on a reduced image)."""
        sx, sy = self.image.width / self.info.width, self.image.height / self.info.height
        left, top, right, bottom = box
        return (
            math.floor(left * sx),
            math.floor(top * sy),
            math.ceil(right * sx),
            math.ceil(bottom * sy),
        )


def _shorter_side_for(width: int, height: int, longer_side: int) -> int:
    """The shorter side an image of ``width``×``height`` has when its longer one is
    ``longer_side`` (rounded up: never below what was asked)."""
    return -(-min(width, height) * longer_side // max(width, height))


def decode_photo(
    data: bytes,
    *,
    max_pixels: int,
    min_side: int | None = None,
    min_longer_side: int | None = None,
) -> DecodedPhoto:
    """Decode to an oriented 8-bit RGB image, ready for a CNN, with the photo's own info.

    ``min_side`` / ``min_longer_side`` let a JPEG decoder skip detail nobody will use: it
    decodes at the smallest DCT scale (1/2, 1/4, 1/8) whose shorter side is still ≥
    ``min_side`` and whose longer side is still ≥ ``min_longer_side``, with no resampling
    afterwards — a 25 MP upload looked at 576 pixels wide is decoded at 1/8, 64× fewer
    pixels (the caller resizes to its exact input anyway). Every byte is still entropy-
    decoded, so a truncated file is caught as in a full decode. Other formats decode whole.
    """
    image, open_notes = _open(data, max_pixels)
    fmt, mode, (width, height) = image.format or "UNKNOWN", image.mode, image.size
    wanted = max(min_side or 0, _shorter_side_for(width, height, min_longer_side or 0))
    if image.format == "JPEG" and wanted:
        image.draft("RGB", (wanted, wanted))  # the header's size is kept above
    _load(image, data, max_pixels)
    orientation, notes = _orientation(image)
    for method in _TRANSPOSE.get(orientation, ()):
        image = image.transpose(method)
    if orientation in (5, 6, 7, 8):  # the transposing orientations swap the sides
        width, height = height, width
    try:
        rgb = _to_rgb(image)
    except Exception as error:
        raise _classify(error, data, max_pixels) from None
    return DecodedPhoto(rgb, ImageInfo(width, height, fmt, mode, open_notes + notes))


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    max_side: int | None = None,
    min_side: int | None = None,
) -> Image.Image:
    """Decode to an oriented 8-bit RGB image, ready for a CNN.

    ``max_side`` bounds the longer side (resampled), so a 40 MP photo never occupies 40 MP
    of memory. ``min_side`` lets a JPEG decoder skip detail nobody will use: it decodes at
    the smallest DCT scale (1/2, 1/4, 1/8) whose shorter side is still ≥ ``min_side``, with
    no resampling afterwards — for a catalog photo encoded at 224 pixels that is ~8× less
    decoding work than full size (the caller resizes to its exact input anyway).
    """
    decoded = decode_photo(data, max_pixels=max_pixels, min_side=min_side or max_side)
    for note in decoded.info.warnings:
        log.warning(note)
    rgb = decoded.image
    if max_side is not None and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return rgb
