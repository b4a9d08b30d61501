"""Safe decoding against a corpus of bad and odd files (tests/data/images)."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiefvision_core.catalog.imaging import (
    DEFAULT_MAX_PIXELS,
    FILE_REASONS,
    REJECT_REASONS,
    decode_image,
    decode_photo,
    inspect_image,
)
from tiefvision_core.errors import ImageRejected

IMAGES = Path(__file__).parents[2] / "data" / "images"
LIMIT = DEFAULT_MAX_PIXELS  # the decoders take the configured limit; these tests the default


def _expected(kind: str) -> list[dict[str, str]]:
    with open(IMAGES / kind / "EXPECTED.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


BAD, ODD = _expected("bad"), _expected("odd")


def _read(kind: str, name: str) -> bytes:
    return (IMAGES / kind / name).read_bytes()


def test_corpus_is_broad_enough() -> None:
    content_reasons = set(REJECT_REASONS) - FILE_REASONS  # file reasons: see test_catalog
    assert len(BAD) >= 10 and {row["reason"] for row in BAD} == content_reasons
    assert len(ODD) >= 12


@pytest.mark.parametrize("row", BAD, ids=[row["file"] for row in BAD])
def test_bad_file_is_rejected_for_its_reason(row: dict[str, str]) -> None:
    data = _read("bad", row["file"])
    for check in (inspect_image, decode_image):
        with pytest.raises(ImageRejected) as caught:
            check(data, max_pixels=LIMIT)
        assert caught.value.reason == row["reason"], caught.value.detail
        assert caught.value.detail


@pytest.mark.parametrize("row", ODD, ids=[row["file"] for row in ODD])
def test_odd_but_valid_file_is_accepted(row: dict[str, str]) -> None:
    data = _read("odd", row["file"])
    info = inspect_image(data, max_pixels=LIMIT)
    assert (info.format, info.width, info.height) == (
        row["format"],
        int(row["width"]),
        int(row["height"]),
    )
    image = decode_image(data, max_pixels=LIMIT)
    assert image.mode == "RGB" and image.size == (info.width, info.height)


def test_format_comes_from_content_not_name() -> None:
    assert inspect_image(_read("odd", "png-named.jpg"), max_pixels=LIMIT).format == "PNG"


def test_sixteen_bit_gray_is_scaled_not_clipped() -> None:
    pixels = np.asarray(decode_image(_read("odd", "gray16.png"), max_pixels=LIMIT))
    assert 120 <= pixels.mean() <= 135  # 32768 / 65535 of full scale


def test_transparency_is_composited_over_white() -> None:
    pixels = np.asarray(decode_image(_read("odd", "palette-transparent.png"), max_pixels=LIMIT))
    assert (pixels[:, :12] == 255).all()  # palette index 0 is transparent
    assert (pixels[:, 12:] == (0, 0, 255)).all()


def test_cmyk_converts_to_plausible_rgb() -> None:
    cmyk = np.asarray(decode_image(_read("odd", "cmyk.jpg"), max_pixels=LIMIT), dtype=float)
    rgb = decode_image(_read("odd", "robe-été-ドレス.jpg"), max_pixels=LIMIT)
    rgb = np.asarray(rgb, dtype=float)
    assert np.abs(cmyk - rgb).mean() < 20


def test_exif_orientation_is_applied() -> None:
    data = _read("odd", "rotated-exif-6.jpg")
    stored = Image.open(io.BytesIO(data))
    assert stored.size == (40, 20)
    upright = decode_image(data, max_pixels=LIMIT)
    assert upright.size == (20, 40)
    # orientation 6 = rotate 90° clockwise to display: the stored top row becomes the right
    stored_top = np.asarray(stored.convert("RGB"), dtype=float)[0].mean()
    shown_right = np.asarray(upright, dtype=float)[:, -1].mean()
    assert abs(stored_top - shown_right) < 8


def test_broken_exif_is_a_warning_not_a_reject(caplog: pytest.LogCaptureFixture) -> None:
    data = _read("odd", "broken-exif.jpg")
    info = inspect_image(data, max_pixels=LIMIT)
    assert info.warnings and "EXIF" in info.warnings[0]
    with caplog.at_level("WARNING"):
        assert decode_image(data, max_pixels=LIMIT).size == (40, 20)
    assert "EXIF" in caplog.text


def test_pixel_limit_is_checked_from_the_header() -> None:
    data = _read("odd", "rgba.png")
    with pytest.raises(ImageRejected) as caught:
        inspect_image(data, max_pixels=100)
    assert caught.value.reason == "too_many_pixels"
    assert inspect_image(data, max_pixels=48 * 32).width == 48


def test_max_side_downscales() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (800, 400), (10, 200, 30)).save(buffer, "JPEG")
    small = decode_image(buffer.getvalue(), max_pixels=LIMIT, max_side=100)
    assert max(small.size) == 100 and small.size[0] == 2 * small.size[1]


def test_no_other_exception_escapes_for_damaged_bytes() -> None:
    """Seeded truncations and bit flips of every valid file: success or ImageRejected only."""
    rng = random.Random(1234)
    sources = [_read("odd", row["file"]) for row in ODD]
    outcomes = {"ok": 0, "rejected": 0}
    for _ in range(400):
        data = bytearray(rng.choice(sources))
        if rng.random() < 0.5:
            del data[rng.randrange(1, len(data)) :]
        else:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            decode_image(bytes(data), max_pixels=1_000_000)
            outcomes["ok"] += 1
        except ImageRejected as rejected:
            assert rejected.reason in REJECT_REASONS
            outcomes["rejected"] += 1
    assert outcomes["rejected"] > 50  # the damage was real


def test_min_side_decodes_jpeg_at_a_reduced_scale_without_going_below() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (960, 1200), (10, 200, 30)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    assert decode_image(jpeg, max_pixels=LIMIT, min_side=224).size == (240, 300)  # 1/4 scale
    assert decode_image(jpeg, max_pixels=LIMIT, min_side=250).size == (480, 600)  # 1/4 too small
    png = io.BytesIO()
    Image.new("RGB", (960, 1200)).save(png, "PNG")
    no_dct = decode_image(png.getvalue(), max_pixels=LIMIT, min_side=224)
    assert no_dct.size == (960, 1200)  # no DCT scaling


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width``×``height`` and holds no pixel data: header-only checks."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_bomb_detail_names_the_configured_limit_not_pillows() -> None:
    data = _read("bad", "bomb.png")  # 20000×20000: beyond twice Pillow's own guard
    with pytest.raises(ImageRejected) as caught:
        inspect_image(data, max_pixels=80_000_000)
    assert caught.value.reason == "too_many_pixels"
    assert (
        "80,000,000" in caught.value.detail and "TIEFVISION_MAX_IMAGE_PIXELS" in caught.value.detail
    )
    assert "178956970" not in caught.value.detail and "178,956,970" not in caught.value.detail


def test_configured_pixel_limit_above_pillows_default_is_the_one_that_decides() -> None:
    data = _png_header(15_000, 13_000)  # 195 MP: Pillow alone refuses it (> 178,956,970)
    with pytest.raises(ImageRejected) as caught:
        inspect_image(data, max_pixels=200_000_000)
    assert caught.value.reason != "too_many_pixels", caught.value.detail  # no pixel data
    with pytest.raises(ImageRejected) as caught:
        inspect_image(data, max_pixels=190_000_000)
    assert caught.value.reason == "too_many_pixels" and "190,000,000" in caught.value.detail


def test_decode_photo_keeps_the_photos_oriented_size_at_a_reduced_scale() -> None:
    """The pixels at 1/8 (the longer side asked is 200), the size the photo itself has —
    after EXIF orientation — so boxes on the pixels can be told in the photo's."""
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    buffer = io.BytesIO()
    Image.new("RGB", (1600, 800), (10, 200, 30)).save(buffer, "JPEG", exif=exif)
    photo = decode_photo(buffer.getvalue(), max_pixels=LIMIT, min_longer_side=200)
    assert photo.image.size == (100, 200) and photo.reduced
    assert (photo.info.width, photo.info.height, photo.info.format) == (800, 1600, "JPEG")
    assert photo.to_decoded((80, 160, 801, 1600)) == (10, 20, 101, 200)  # widened, not cut
    with pytest.raises(ImageRejected) as caught:  # the limit is the photo's pixels, not 1/8's
        decode_photo(buffer.getvalue(), max_pixels=1600 * 800 - 1, min_longer_side=200)
    assert caught.value.reason == "too_many_pixels"
