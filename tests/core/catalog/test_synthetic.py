"""Synthetic catalog: deterministic, boxes that hold the garment, products that differ."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiefvision_core.catalog.synthetic import generate_catalog, render_view
from tiefvision_core.catalog.synthetic_garments import make_products


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("synth")
    return out, generate_catalog(out, products=8, views=3, seed=1)


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    generate_catalog(tmp_path / "a", products=2, views=2, seed=7)
    generate_catalog(tmp_path / "b", products=2, views=2, seed=7)
    generate_catalog(tmp_path / "c", products=2, views=2, seed=8)
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a == b
    assert a["images/p0000/view-1.jpg"] != c["images/p0000/view-1.jpg"]


def test_files_are_jpegs_of_the_requested_size(tmp_path: Path) -> None:
    written = generate_catalog(tmp_path, products=2, views=2, size=(200, 260))
    assert [s.path for s in written] == [
        "p0000/view-1.jpg",
        "p0000/view-2.jpg",
        "p0001/view-1.jpg",
        "p0001/view-2.jpg",
    ]
    for sample in written:
        with Image.open(tmp_path / "images" / sample.path) as image:
            assert (image.format, image.size) == ("JPEG", (200, 260))


def test_csvs_have_one_row_per_image_and_agree(catalog) -> None:
    out, written = catalog
    with open(out / "boxes.csv", newline="") as handle:
        boxes = list(csv.DictReader(handle))
    with open(out / "products.csv", newline="") as handle:
        products = list(csv.DictReader(handle))
    assert list(boxes[0]) == ["image", "left", "top", "right", "bottom"]
    assert {"image", "product_id", "category", "cut", "pattern", "color"} <= set(products[0])
    assert (
        [r["image"] for r in boxes] == [r["image"] for r in products] == [s.path for s in written]
    )
    assert all(r["image"].startswith(r["product_id"] + "/") for r in products)
    assert [tuple(int(r[k]) for k in ("left", "top", "right", "bottom")) for r in boxes] == [
        s.box for s in written
    ]


def test_boxes_are_inside_and_hold_the_garment(catalog) -> None:
    _, written = catalog
    for sample in written:
        left, top, right, bottom = sample.box
        assert 0 <= left < right <= sample.width and 0 <= top < bottom <= sample.height
        area = (right - left) * (bottom - top) / (sample.width * sample.height)
        assert 0.03 < area < 0.9, sample


def test_box_is_tight_around_the_garment_pixels() -> None:
    """Render a view, then re-render with a recoloured product: only garment pixels change,
    and they all lie inside the box, touching each of its sides."""
    product = make_products(3, seed=2)[1]
    image, box = render_view(product, 2, seed=2)
    other = type(product)(**{**product.__dict__, "color": (0, 255, 0), "pattern": "solid"})
    changed_image, same_box = render_view(other, 2, seed=2)
    assert same_box == box
    diff = (
        np.abs(np.asarray(image, dtype=int) - np.asarray(changed_image, dtype=int)).sum(axis=2) > 60
    )
    ys, xs = np.nonzero(diff)
    left, top, right, bottom = box
    assert xs.min() >= left - 1 and xs.max() <= right and ys.min() >= top - 1 and ys.max() <= bottom
    assert xs.min() - left < 6 and right - xs.max() < 6 and ys.min() - top < 6
    assert bottom - ys.max() < 6


def test_views_of_a_product_look_more_alike_than_other_products(catalog) -> None:
    """Colour histograms inside the box: nearest other view is usually the same product."""
    out, written = catalog

    def histogram(sample) -> np.ndarray:
        with Image.open(out / "images" / sample.path) as image:
            crop = np.asarray(image.convert("RGB").crop(sample.box)) // 64
        codes = crop[..., 0] * 16 + crop[..., 1] * 4 + crop[..., 2]
        counts = np.bincount(codes.ravel(), minlength=64).astype(float)
        return counts / counts.sum()

    hists = np.stack([histogram(s) for s in written])
    distance = np.abs(hists[:, None] - hists[None]).sum(axis=2)
    np.fill_diagonal(distance, np.inf)
    nearest = distance.argmin(axis=1)
    same = [written[i].product_id == written[j].product_id for i, j in enumerate(nearest)]
    assert np.mean(same) >= 0.7


def test_products_vary_and_include_two_categories() -> None:
    products = make_products(40, seed=0)
    assert len({p.product_id for p in products}) == 40
    assert {p.category for p in products} == {"dress", "skirt"}
    assert len({p.cut for p in products}) >= 4 and len({p.pattern for p in products}) >= 4


def test_default_style_is_studio_byte_for_byte(tmp_path: Path) -> None:
    """The style argument leaves every existing catalog as it was: omitted = "studio"."""
    generate_catalog(tmp_path / "omitted", products=2, views=2, seed=4)
    generate_catalog(tmp_path / "studio", products=2, views=2, seed=4, style="studio")
    assert _files(tmp_path / "omitted") == _files(tmp_path / "studio")


@pytest.fixture(scope="module")
def rooms(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("rooms")
    return out, generate_catalog(out, products=6, views=4, seed=1, style="rooms")


def test_rooms_style_is_deterministic_and_differs_from_studio(tmp_path: Path, rooms) -> None:
    out, _ = rooms
    again = tmp_path / "again"
    generate_catalog(again, products=6, views=4, seed=1, style="rooms")
    assert _files(again) == _files(out)
    studio = tmp_path / "studio"
    generate_catalog(studio, products=6, views=4, seed=1)
    rooms_files, studio_files = _files(out), _files(studio)
    assert rooms_files.keys() == studio_files.keys()
    assert rooms_files["products.csv"] == studio_files["products.csv"]  # same products
    jpegs = [name for name in rooms_files if name.endswith(".jpg")]
    assert all(rooms_files[name] != studio_files[name] for name in jpegs)


def test_rooms_boxes_lie_inside_and_vary_in_size_and_place(rooms) -> None:
    out, written = rooms
    with open(out / "boxes.csv", newline="") as handle:
        boxes = list(csv.DictReader(handle))
    assert [tuple(int(r[k]) for k in ("left", "top", "right", "bottom")) for r in boxes] == [
        s.box for s in written
    ]
    shares, centres = [], []
    for sample in written:
        left, top, right, bottom = sample.box
        assert 0 <= left < right <= sample.width and 0 <= top < bottom <= sample.height
        shares.append((right - left) * (bottom - top) / (sample.width * sample.height))
        centres.append(((left + right) / 2 / sample.width, (top + bottom) / 2 / sample.height))
    assert min(shares) < 0.06 and max(shares) > 0.25  # small products and large ones
    assert max(abs(x - 0.5) for x, _ in centres) > 0.25  # some far off-centre


def test_rooms_box_is_the_visible_garment() -> None:
    """Recolouring the product changes pixels only inside its box, and up to its sides:
    the box holds what is visible of the garment, occluders cut off."""
    product = make_products(3, seed=2)[1]
    for view in range(1, 7):
        image, box = render_view(product, view, seed=2, style="rooms")
        other = type(product)(**{**product.__dict__, "color": (0, 255, 0), "pattern": "solid"})
        changed, same_box = render_view(other, view, seed=2, style="rooms")
        assert same_box == box
        diff = np.abs(np.asarray(image, dtype=int) - np.asarray(changed, dtype=int)).sum(axis=2)
        ys, xs = np.nonzero(diff > 60)
        left, top, right, bottom = box
        assert xs.min() >= left - 1 and xs.max() <= right
        assert ys.min() >= top - 1 and ys.max() <= bottom
        assert xs.min() - left < 8 and right - xs.max() < 8 and ys.min() - top < 8


def test_unknown_style_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rooms"):
        generate_catalog(tmp_path, products=1, views=1, style="beach")
