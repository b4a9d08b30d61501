"""Augmented views: deterministic, inside the photo, within the asked area and colour."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tiefvision_core.similarity.views import augmented_view, view_params


def test_a_view_is_the_same_on_every_call_and_differs_between_view_numbers() -> None:
    first = view_params("photo.jpg", 0, 640, 480, seed=3)
    assert first == view_params("photo.jpg", 0, 640, 480, seed=3)
    others = {view_params("photo.jpg", k, 640, 480, seed=3) for k in range(1, 6)}
    assert first not in others
    assert view_params("photo.jpg", 0, 640, 480, seed=4) != first


@pytest.mark.parametrize("size", [(640, 480), (300, 900), (7, 5)])
def test_the_box_lies_inside_the_photo_and_keeps_the_asked_share_of_its_area(size) -> None:
    width, height = size
    for k in range(200):
        params = view_params(f"p{k}", k, width, height, min_area=0.5)
        left, top, right, bottom = params.box
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        area = (right - left) * (bottom - top) / (width * height)
        if min(size) > 100:  # rounding dominates a few-pixel photo
            assert 0.5 * 0.9 <= area <= 1.0
        for factor in (params.brightness, params.contrast, params.saturation):
            assert 0.7 <= factor <= 1.3


def test_min_area_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="min_area"):
        view_params("p", 0, 10, 10, min_area=0)


def test_the_view_crops_mirrors_and_recolours_as_its_parameters_say() -> None:
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30] = (200, 50, 50)  # left half red, right half black
    photo = Image.fromarray(pixels)
    params = view_params("p", 0, 60, 40)
    for mirrored in (False, True):
        chosen = type(params)((0, 0, 60, 40), mirrored, 1.0, 1.0, 1.0)
        out = np.asarray(augmented_view(photo, chosen))
        assert out.shape == (40, 60, 3)
        red_side = out[:, 45:] if mirrored else out[:, :15]
        assert (red_side == (200, 50, 50)).all()
    darker = type(params)((10, 5, 30, 25), False, 0.5, 1.0, 1.0)
    out = np.asarray(augmented_view(photo, darker))
    assert out.shape == (20, 20, 3)
    assert out[0, 0, 0] == 100  # brightness halved, crop started inside the red half
