"""An uploaded photo is decoded at the size its search needs (issue 28, item 5b): JPEG DCT
scaling to the locator's largest side, the box told in the photo's own pixels."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from tests.locators import GEOMETRY, IDENTITY_SCALER, RecordingEncoder, constant_heads
from tiefvision_core.catalog.imaging import DEFAULT_MAX_PIXELS, decode_image
from tiefvision_core.index import models, photo_search
from tiefvision_core.locator.model_files import save_locator
from tiefvision_core.storage.stores import LocalStore

PHOTO = (4000, 3000)  # 12 MP; the locator looks at 576 pixels at most


class _Encoder(RecordingEncoder):
    preprocessing = SimpleNamespace(crop_size=224)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStore:
    monkeypatch.setattr(models, "MODELS", models.ModelCache())
    return LocalStore(tmp_path)


def _locator(store: LocalStore, target: tuple[float, float, float, float]) -> None:
    """A locator whose windows all say "the product is at ``target`` of me"."""
    save_locator(
        store,
        constant_heads(20.0, target),
        IDENTITY_SCALER,
        geometry=GEOMETRY,
        scales=(320, 448, 576),
        threshold=0.8,
        metadata={"encoder_version": "fake-1"},
    )


def _jpeg(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 200)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_an_upload_is_decoded_at_a_dct_scale_and_located_in_its_own_pixels(store) -> None:
    _locator(store, (0.0, 0.0, 1.0, 1.0))
    data = _jpeg(PHOTO)
    encoder = _Encoder()
    photo = photo_search.read_query_photo(store, encoder, data, max_pixels=DEFAULT_MAX_PIXELS)
    decoded = photo.decoded.image
    assert (photo.info.width, photo.info.height) == PHOTO
    # 1/4 (1000×750): the smallest scale whose longer side still covers the 576 looked at.
    assert decoded.size == (1000, 750)
    assert decoded.width * decoded.height <= PHOTO[0] * PHOTO[1] / 16
    assert [max(side) for side in encoder.inputs] == [448, 576]  # the query scales
    # The same box, in the photo's pixels, as locating the photo decoded whole.
    whole = decode_image(data, max_pixels=DEFAULT_MAX_PIXELS)
    expected = photo_search.query_box(store, _Encoder(), whole)
    assert max(abs(a - b) for a, b in zip(photo.box, expected, strict=True)) <= 4
    assert 0 <= photo.box[0] < photo.box[2] <= PHOTO[0] and photo.box[3] <= PHOTO[1]
    assert photo.box[2] - photo.box[0] > decoded.width  # photo pixels, not decoded ones


def test_a_box_too_small_for_the_encoder_at_that_scale_is_decoded_again_larger(store) -> None:
    """A small product in a large photo: its crop gets as many pixels as a catalog crop."""
    _locator(store, (0.35, 0.35, 0.65, 0.65))
    photo = photo_search.read_query_photo(
        store, _Encoder(), _jpeg(PHOTO), max_pixels=DEFAULT_MAX_PIXELS
    )
    left, top, right, bottom = photo.box
    assert min(right - left, bottom - top) < 4 * 224  # under 224 pixels at 1/4
    # 1/2 is the smallest scale at which the box still spans the encoder's 224 pixels.
    assert photo.decoded.image.size == (2000, 1500)
    crop = photo.decoded.to_decoded(photo.box)
    assert 224 <= min(crop[2] - crop[0], crop[3] - crop[1]) < 2 * 224


def test_without_a_locator_the_whole_photo_at_the_encoders_size(store) -> None:
    photo = photo_search.read_query_photo(
        store, _Encoder(), _jpeg(PHOTO), max_pixels=DEFAULT_MAX_PIXELS
    )
    assert photo.box == [0, 0, *PHOTO]
    assert photo.decoded.image.size == (500, 375)  # 1/8: the 224-pixel crop is covered


def test_the_pixel_limit_is_the_one_given(store) -> None:
    from tiefvision_core.errors import ImageRejected

    with pytest.raises(ImageRejected) as caught:
        photo_search.read_query_photo(store, _Encoder(), _jpeg(PHOTO), max_pixels=10_000_000)
    assert caught.value.reason == "too_many_pixels" and "10,000,000" in caught.value.detail
