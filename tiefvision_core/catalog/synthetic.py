"""A deterministic generator of studio-style product photos with ground truth.

Why synthetic: demos and tests need a catalog that anyone can make offline in seconds, with
*true* boxes (to score the locator) and *true* product identity (to score retrieval). The
images are built so both tasks are honest:

* views of one product share silhouette, colour and pattern, so "same product" is visible;
* every view changes position, scale, background, lighting and a small rotation, so a
  model cannot match on pixel position;
* a mannequin (head, arms, legs) and props (bag, plant, shelf) surround the garment, so
  "the biggest non-background blob" is not the box.

The products and their garments are :mod:`tiefvision_core.catalog.synthetic_garments`,
the studio and room scenes they are photographed in
:mod:`tiefvision_core.catalog.synthetic_scenes`. Layout written by
:func:`generate_catalog`::

    OUT/images/<product_id>/view-<k>.jpg
    OUT/boxes.csv      image,left,top,right,bottom        (image = path under images/)
    OUT/products.csv   image,product_id,category,cut,length,color,pattern,view
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tiefvision_core.catalog.synthetic_garments import ProductSpec, make_products
from tiefvision_core.catalog.synthetic_scenes import room_view, studio_view

__all__ = [
    "STYLES",
    "SyntheticImage",
    "generate_catalog",
    "render_view",
]

#: How the photos look: ``studio`` (the default, what demos and tests use) and ``rooms``.
STYLES = ("studio", "rooms")


@dataclass(frozen=True)
class SyntheticImage:
    """One written photo and its ground truth."""

    path: str  # relative to OUT/images, forward slashes
    product_id: str
    view: int
    box: tuple[int, int, int, int]  # the garment's tight box: left, top, right, bottom
    width: int
    height: int


def render_view(
    product: ProductSpec,
    view: int,
    *,
    seed: int = 0,
    size: tuple[int, int] = (320, 400),
    style: str = "studio",
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """One photo of ``product`` and the garment's tight box (left, top, right, bottom).

    ``style``: ``"studio"`` (plain or walled backdrop, one mannequin, props beside it) or
    ``"rooms"`` (see :func:`~tiefvision_core.catalog.synthetic_scenes.room_view`), a look
    the studio-trained models never saw.
    """
    if style == "rooms":
        return room_view(product, view, seed=seed, size=size)
    if style != "studio":
        raise ValueError(f"unknown synthetic style {style!r}: use one of {', '.join(STYLES)}")
    return studio_view(product, view, seed=seed, size=size)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def generate_catalog(
    out_dir: str | Path,
    *,
    products: int = 24,
    views: int = 4,
    seed: int = 0,
    size: tuple[int, int] = (320, 400),
    jpeg_quality: int = 90,
    style: str = "studio",
) -> list[SyntheticImage]:
    """Write ``products × views`` JPEGs plus ``boxes.csv`` and ``products.csv``.

    Same arguments, byte-identical files: a test's catalog is the same on every machine.
    ``style`` (:data:`STYLES`) changes how the photos look, never the products: the same
    seed gives the same products in either style, so one style can train and the other
    score.
    """
    if products < 1 or views < 1:
        raise ValueError("products and views must be at least 1")
    if style not in STYLES:
        raise ValueError(f"unknown synthetic style {style!r}: use one of {', '.join(STYLES)}")
    out = Path(out_dir)
    written: list[SyntheticImage] = []
    rows: list[dict[str, object]] = []
    for product in make_products(products, seed=seed):
        folder = out / "images" / product.product_id
        folder.mkdir(parents=True, exist_ok=True)
        for view in range(1, views + 1):
            image, box = render_view(product, view, seed=seed, size=size, style=style)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=jpeg_quality)
            rel = f"{product.product_id}/view-{view}.jpg"
            _write_atomic(folder / f"view-{view}.jpg", buffer.getvalue())
            written.append(SyntheticImage(rel, product.product_id, view, box, *size))
            rows.append(
                {
                    "image": rel,
                    "product_id": product.product_id,
                    "category": product.category,
                    "cut": product.cut,
                    "length": product.length,
                    "color": product.color_name,
                    "pattern": product.pattern,
                    "view": view,
                }
            )
    _write_csv(
        out / "boxes.csv",
        ["image", "left", "top", "right", "bottom"],
        [
            {"image": s.path, **dict(zip(("left", "top", "right", "bottom"), s.box, strict=True))}
            for s in written
        ],
    )
    _write_csv(out / "products.csv", list(rows[0]), rows)
    return written


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, object]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_atomic(path, buffer.getvalue().encode())
