"""Regenerate the bad and odd image corpus under tests/data/images/ (deterministic).

    python tests/data/make_image_corpus.py

``bad/`` holds files ingest must reject (``EXPECTED.csv``: file, reason); ``odd/`` holds
valid files with unusual encodings that must be accepted (``EXPECTED.csv``: file, format,
width, height — the size after EXIF orientation). Every file is tiny; the decompression
bomb is a real PNG whose header claims 20,000 × 20,000 pixels but compresses to a few KB.
"""

from __future__ import annotations

import csv
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent / "images"


def _save(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _photo(size: tuple[int, int] = (48, 32)) -> Image.Image:
    rng = np.random.default_rng(0)
    x = np.linspace(0, 255, size[0], dtype=np.float32)
    y = np.linspace(0, 255, size[1], dtype=np.float32)[:, None]
    rgb = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2)
    rgb += rng.normal(0, 8, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(side: int = 20_000) -> bytes:
    """A 1-bit grayscale PNG of side × side zeros: huge when decoded, tiny on disk."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


def _exif_jpeg(orientation_exif: bytes) -> bytes:
    """A JPEG with an APP1 Exif segment spliced in after SOI."""
    jpeg = _save(_photo((40, 20)), "JPEG", quality=90)
    segment = b"\xff\xe1" + struct.pack(">H", len(orientation_exif) + 2) + orientation_exif
    return jpeg[:2] + segment + jpeg[2:]


def _orientation_6() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(_photo((40, 20)), "JPEG", quality=90, exif=exif.tobytes())


def bad_files() -> dict[str, tuple[bytes, str]]:
    jpeg = _save(_photo(), "JPEG", quality=90)
    png = _save(_photo(), "PNG")
    gif = _save(_photo().convert("P"), "GIF")
    webp = _save(_photo(), "WEBP", quality=80)
    bmp = _save(_photo(), "BMP")
    # A JPEG whose SOF0 segment claims 0 components: Pillow refuses the frame header.
    sof = jpeg.index(b"\xff\xc0")
    bad_sof = jpeg[: sof + 9] + b"\x00" + jpeg[sof + 10 :]
    # A PNG whose IDAT payload is not zlib data (CRC recomputed, so the chunk parses).
    idat = png.index(b"IDAT") - 4
    length = struct.unpack(">I", png[idat : idat + 4])[0]
    garbage = bytes(range(256)) * (length // 256 + 1)
    bad_idat = png[:idat] + _png_chunk(b"IDAT", garbage[:length]) + png[idat + 12 + length :]
    # A BMP whose header claims an impossible bit depth.
    bad_bmp = bmp[:28] + struct.pack("<H", 7) + bmp[30:]
    return {
        "empty.jpg": (b"", "empty_file"),
        "text-named.jpg": (b"just some notes about a dress, not a photo\n" * 4, "not_an_image"),
        "error-page.png": (
            b"<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>\n",
            "not_an_image",
        ),
        "document.jpg": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "not_an_image"),
        "random.bin": (np.random.default_rng(1).bytes(4096), "not_an_image"),
        "half.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "half.png": (png[: len(png) // 2], "truncated"),
        "half.gif": (gif[: len(gif) // 2], "truncated"),
        "half.webp": (webp[: len(webp) // 2], "truncated"),
        "bad-frame-header.jpg": (bad_sof, "corrupt"),
        "bad-idat.png": (bad_idat, "corrupt"),
        "bad-depth.bmp": (bad_bmp, "corrupt"),
        "bomb.png": (_bomb_png(), "too_many_pixels"),
    }


def odd_files() -> dict[str, tuple[bytes, str, int, int]]:
    photo = _photo()
    gray16 = Image.fromarray(np.full((16, 24), 32768, dtype=np.uint16))
    palette = Image.new("P", (24, 16), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (12, 0, 24, 16))
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    frames = [_photo(), _photo().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    animated = io.BytesIO()
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:], duration=100)
    broken_exif = b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08" + b"\xff\xff" + b"\x00" * 10
    return {
        "cmyk.jpg": (_save(photo.convert("CMYK"), "JPEG"), "JPEG", 48, 32),
        "gray16.png": (_save(gray16, "PNG"), "PNG", 24, 16),
        "palette-transparent.png": (_save(palette, "PNG", transparency=0), "PNG", 24, 16),
        "rgba.png": (_save(rgba, "PNG"), "PNG", 48, 32),
        "gray-alpha.png": (_save(photo.convert("LA"), "PNG"), "PNG", 48, 32),
        "bilevel.png": (_save(photo.convert("1"), "PNG"), "PNG", 48, 32),
        "progressive.jpg": (_save(photo, "JPEG", progressive=True), "JPEG", 48, 32),
        "lossy.webp": (_save(photo, "WEBP", quality=70), "WEBP", 48, 32),
        "alpha.webp": (_save(rgba, "WEBP", lossless=True), "WEBP", 48, 32),
        "one-pixel.png": (_save(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"), "PNG", 1, 1),
        "png-named.jpg": (_save(photo, "PNG"), "PNG", 48, 32),
        "robe-été-ドレス.jpg": (_save(photo, "JPEG"), "JPEG", 48, 32),
        "rotated-exif-6.jpg": (_orientation_6(), "JPEG", 20, 40),
        "broken-exif.jpg": (_exif_jpeg(broken_exif), "JPEG", 40, 20),
        "animated.gif": (animated.getvalue(), "GIF", 48, 32),
        "grayscale.jpg": (_save(photo.convert("L"), "JPEG"), "JPEG", 48, 32),
        "scan.tiff": (_save(photo, "TIFF", compression="tiff_lzw"), "TIFF", 48, 32),
    }


def main() -> None:
    for name, rows, columns in (
        ("bad", {k: (v[0], v[1]) for k, v in bad_files().items()}, ["file", "reason"]),
        ("odd", odd_files(), ["file", "format", "width", "height"]),
    ):
        folder = HERE / name
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "EXPECTED.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(columns)
            for file, (data, *expected) in sorted(rows.items()):
                (folder / file).write_bytes(data)
                writer.writerow([file, *expected])


if __name__ == "__main__":
    main()
