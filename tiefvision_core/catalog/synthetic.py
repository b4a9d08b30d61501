"""A deterministic generator of studio-style product photos with ground truth.

Why synthetic: demos and tests need a catalog that anyone can make offline in seconds, with
*true* boxes (to score the locator) and *true* product identity (to score retrieval). The
images are built so both tasks are honest:

* views of one product share silhouette, colour and pattern, so "same product" is visible;
* every view changes position, scale, background, lighting and a small rotation, so a
  model cannot match on pixel position;
* a mannequin (head, arms, legs) and props (bag, plant, shelf) surround the garment, so
  "the biggest non-background blob" is not the box.

Layout written by :func:`generate_catalog`::

    OUT/images/<product_id>/view-<k>.jpg
    OUT/boxes.csv      image,left,top,right,bottom        (image = path under images/)
    OUT/products.csv   image,product_id,category,cut,length,color,pattern,view
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

__all__ = [
    "STYLES",
    "ProductSpec",
    "SyntheticImage",
    "generate_catalog",
    "make_products",
    "render_view",
]

CUTS = ("a-line", "sheath", "mermaid", "ballgown", "shift")
LENGTHS = {"mini": 0.55, "knee": 0.72, "midi": 0.86, "maxi": 1.0}
PATTERNS = ("solid", "stripes", "dots", "checks", "print")
COLORS = {
    "red": (200, 30, 45),
    "navy": (25, 40, 110),
    "emerald": (20, 130, 80),
    "mustard": (215, 165, 35),
    "black": (25, 25, 28),
    "white": (238, 236, 230),
    "pink": (235, 130, 170),
    "sky": (110, 170, 225),
    "purple": (110, 50, 140),
    "orange": (235, 110, 30),
    "teal": (20, 130, 140),
    "brown": (120, 75, 40),
}
#: How the photos look: ``studio`` (the default, what demos and tests use) and ``rooms``.
STYLES = ("studio", "rooms")
_SKIN = ((241, 194, 160), (224, 172, 130), (198, 134, 96), (141, 85, 54), (92, 58, 38))


@dataclass(frozen=True)
class ProductSpec:
    """The attributes that make a product recognisable across its views."""

    product_id: str
    category: str  # "dress" or "skirt": a second category lets search filters be tested
    cut: str
    length: str
    color: tuple[int, int, int]
    color_name: str
    pattern: str
    pattern_color: tuple[int, int, int]


@dataclass(frozen=True)
class SyntheticImage:
    """One written photo and its ground truth."""

    path: str  # relative to OUT/images, forward slashes
    product_id: str
    view: int
    box: tuple[int, int, int, int]  # the garment's tight box: left, top, right, bottom
    width: int
    height: int


def _rng(*parts: object) -> random.Random:
    """An independent, reproducible stream per (seed, product, view, purpose)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def make_products(n: int, *, seed: int = 0) -> list[ProductSpec]:
    """``n`` products with varied cut, length, colour and pattern (about a quarter skirts)."""
    products = []
    names = list(COLORS)
    for index in range(n):
        rng = _rng(seed, "product", index)
        color_name = rng.choice(names)
        contrast = [c for c in names if c != color_name]
        pattern_name = rng.choice(contrast)
        products.append(
            ProductSpec(
                product_id=f"p{index:04d}",
                category="skirt" if rng.random() < 0.25 else "dress",
                cut=rng.choice(CUTS),
                length=rng.choice(list(LENGTHS)),
                color=COLORS[color_name],
                color_name=color_name,
                pattern=rng.choice(PATTERNS),
                pattern_color=COLORS[pattern_name],
            )
        )
    return products


def _silhouette(product: ProductSpec, height: float) -> list[tuple[float, float]]:
    """Outline of the garment, x centred on 0, y from 0 (top) down to ``height``."""
    hem = height * LENGTHS[product.length]
    if product.category == "skirt":
        waist, top = 0.20 * height, 0.0
        shoulders = 0.0  # none: the outline below adds shoulder points only when truthy
    else:
        waist, top = 0.30 * height, 0.0
        shoulders = 0.19 * height
    hem_half = {
        "a-line": 0.42,
        "sheath": 0.24,
        "mermaid": 0.38,
        "ballgown": 0.58,
        "shift": 0.30,
    }[product.cut] * height
    waist_half = 0.13 * height if product.cut != "shift" else 0.18 * height
    if product.category == "skirt":
        waist_y = top
        points = [(-waist_half, waist_y), (waist_half, waist_y)]
    else:
        neck = 0.07 * height
        bust = 0.17 * height
        points = [
            (-neck, top),
            (neck, top),
            (shoulders, top + 0.02 * height),
            (bust, 0.16 * height),
            (waist_half, waist),
        ]
        waist_y = waist
    right: list[tuple[float, float]] = []
    if product.cut == "mermaid":
        knee = waist_y + (hem - waist_y) * 0.7
        right += [(waist_half * 1.15, knee - 0.05 * height), (waist_half * 0.9, knee)]
    elif product.cut == "ballgown":
        right += [(hem_half * 0.7, waist_y + (hem - waist_y) * 0.35)]
    right += [(hem_half, hem)]
    points += right
    # Close the outline: right side down, hem, left side up.
    outline = points + [(-x, y) for x, y in reversed(right)]
    if shoulders:
        outline += [(-waist_half, waist), (-bust, 0.16 * height), (-shoulders, top + 0.02 * height)]
    return outline


def _pattern_layer(product: ProductSpec, size: tuple[int, int], scale: float) -> Image.Image:
    """The fabric: base colour, pattern, and vertical shading so it reads as cloth."""
    width, height = size
    fabric = Image.new("RGB", size, product.color)
    draw = ImageDraw.Draw(fabric)
    step = max(4, int(14 * scale))
    other = product.pattern_color
    if product.pattern == "stripes":
        for x in range(0, width + height, step * 2):
            draw.polygon(
                [(x, 0), (x + step, 0), (x + step - height, height), (x - height, height)],
                fill=other,
            )
    elif product.pattern == "dots":
        radius = max(2, step // 3)
        for row, y in enumerate(range(0, height + step, step)):
            for x in range((row % 2) * step // 2, width + step, step):
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=other)
    elif product.pattern == "checks":
        for y in range(0, height, step):
            for x in range(0, width, step):
                if (x // step + y // step) % 2 == 0:
                    draw.rectangle([x, y, x + step - 1, y + step - 1], fill=other)
    elif product.pattern == "print":
        rng = _rng(product.product_id, "print")  # the same motif in every view
        for _ in range(max(6, width * height // (step * step * 3))):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            r = rng.uniform(0.4, 1.0) * step
            draw.ellipse([cx - r, cy - r / 2, cx + r, cy + r / 2], fill=other)
            draw.ellipse([cx - r / 3, cy - r / 3, cx + r / 3, cy + r / 3], fill=(250, 245, 235))
    shade = Image.linear_gradient("L").resize(size).point(lambda v: 200 + v * 55 // 255)
    folds = Image.new("L", size, 255)
    fold_draw = ImageDraw.Draw(folds)
    for i in range(1, 5):
        fold_draw.line([(width / 2, 0), (width * i / 5, height)], fill=215, width=max(1, step // 3))
    folds = folds.filter(ImageFilter.GaussianBlur(max(1, step // 2)))
    black = Image.new("RGB", size, (0, 0, 0))
    fabric = Image.composite(fabric, black, shade)
    return Image.composite(fabric, black, folds)


def _background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    base = tuple(rng.randint(150, 245) for _ in range(3))
    kind = rng.choice(("plain", "gradient", "wall"))
    image = Image.new("RGB", size, base)
    if kind == "gradient":
        dark = tuple(max(0, c - rng.randint(40, 90)) for c in base)
        mask = Image.linear_gradient("L").resize(size)
        image = Image.composite(Image.new("RGB", size, dark), image, mask)
    elif kind == "wall":
        draw = ImageDraw.Draw(image)
        floor_y = int(size[1] * rng.uniform(0.75, 0.9))
        floor = tuple(max(0, c - rng.randint(30, 70)) for c in base)
        draw.rectangle([0, floor_y, size[0], size[1]], fill=floor)
        for x in range(0, size[0], rng.randint(30, 60)):
            draw.line([(x, 0), (x, floor_y)], fill=tuple(max(0, c - 12) for c in base), width=2)
    return image


def _draw_props(rng: random.Random, image: Image.Image, avoid: tuple[int, int, int, int]) -> None:
    """A bag, a plant or a shelf beside the garment (never over its box)."""
    width, height = image.size
    draw = ImageDraw.Draw(image)
    left_space, right_space = avoid[0], width - avoid[2]
    for _ in range(rng.randint(1, 2)):
        side_left = left_space > right_space if rng.random() < 0.8 else left_space <= right_space
        span = (0, avoid[0]) if side_left else (avoid[2], width)
        if span[1] - span[0] < 24:
            continue
        w = min(span[1] - span[0] - 4, rng.randint(24, 60))
        x0 = rng.randint(span[0], span[1] - w)
        y1 = rng.randint(int(height * 0.6), height - 4)
        kind = rng.choice(("bag", "plant", "shelf"))
        color = tuple(rng.randint(30, 220) for _ in range(3))
        if kind == "bag":
            h = int(w * 0.8)
            draw.rounded_rectangle([x0, y1 - h, x0 + w, y1], radius=6, fill=color)
            draw.arc(
                [x0 + w // 4, y1 - h - w // 2, x0 + 3 * w // 4, y1 - h + w // 4],
                180,
                360,
                fill=color,
                width=3,
            )
        elif kind == "plant":
            h = int(w * 0.7)
            draw.rectangle([x0 + w // 5, y1 - h, x0 + 4 * w // 5, y1], fill=(150, 85, 50))
            for _ in range(6):
                cx = x0 + rng.randint(0, w)
                cy = y1 - h - rng.randint(0, w)
                r = rng.randint(6, 14)
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(40, rng.randint(110, 160), 50))
        else:
            h = rng.randint(8, 14)
            draw.rectangle([x0, y1 - h, x0 + w, y1], fill=color)
            draw.rectangle([x0 + 4, y1 - h - 20, x0 + 14, y1 - h], fill=(200, 200, 210))


def _dressed_figure(
    rng: random.Random, product: ProductSpec, garment_h: float
) -> tuple[Image.Image, Image.Image]:
    """The garment on a mannequin (head, arms, legs; 70 % of dresses), upright: the RGBA
    layer and the garment's own mask on the same canvas."""
    outline = _silhouette(product, garment_h)
    half_w = max(abs(x) for x, _ in outline)
    bottom = max(y for _, y in outline)
    margin = int(garment_h * 0.25)  # room for head above and legs below
    canvas_w = int(2 * half_w + 2 * margin)
    canvas_h = int(bottom + 2 * margin)
    cx, top = canvas_w / 2, margin
    points = [(cx + x, top + y) for x, y in outline]

    garment_mask = Image.new("L", (canvas_w, canvas_h), 0)
    ImageDraw.Draw(garment_mask).polygon(points, fill=255)
    fabric = _pattern_layer(product, (canvas_w, canvas_h), garment_h / 300)
    figure = Image.new("RGBA", (canvas_w, canvas_h), (0, 0, 0, 0))
    if product.category == "dress" and rng.random() < 0.7:
        skin = (*rng.choice(_SKIN), 255)
        fig = ImageDraw.Draw(figure)
        head_r = garment_h * 0.075
        neck_y = top
        fig.ellipse(
            [cx - head_r, neck_y - 2.6 * head_r, cx + head_r, neck_y - 0.6 * head_r], fill=skin
        )
        fig.rectangle(
            [cx - head_r * 0.35, neck_y - 0.8 * head_r, cx + head_r * 0.35, neck_y + 4], fill=skin
        )
        arm = garment_h * 0.045
        shoulder = garment_h * 0.19
        for sign in (-1, 1):
            x = cx + sign * shoulder
            fig.line(
                [(x, top + 4), (x + sign * arm * 2.5, top + garment_h * 0.45)],
                fill=skin,
                width=int(arm),
            )
        hem_y = top + bottom
        for sign in (-1, 1):
            x = cx + sign * garment_h * 0.06
            fig.line(
                [(x, hem_y - 6), (x, min(canvas_h, hem_y + margin))],
                fill=skin,
                width=int(arm * 1.2),
            )
    layer = figure.copy()
    layer.paste(fabric, (0, 0), garment_mask)
    return layer, garment_mask


def _turn(
    layer: Image.Image, mask: Image.Image, angle: float, flip: bool
) -> tuple[Image.Image, Image.Image]:
    """Mirror (when ``flip``) and rotate the layer and its mask together."""
    if flip:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    layer = layer.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    mask = mask.rotate(angle, resample=Image.Resampling.NEAREST, expand=True)
    return layer, mask


def _place(
    rng: random.Random, layer: Image.Image, mask: Image.Image, size: tuple[int, int]
) -> tuple[Image.Image, Image.Image, int, int, tuple[int, int, int, int]]:
    """Shrink the layer when its garment does not fit, then a random position that keeps
    the garment's box fully inside the image (the figure may be cut off): the layer, its
    mask, the paste offset and the box."""
    width, height = size
    g_left, g_top, g_right, g_bottom = mask.getbbox() or (0, 0, 1, 1)
    g_w, g_h = g_right - g_left, g_bottom - g_top
    if g_w >= width or g_h >= height:
        scale = 0.95 * min(width / g_w, height / g_h)
        new_size = (max(1, int(layer.width * scale)), max(1, int(layer.height * scale)))
        layer = layer.resize(new_size, Image.Resampling.BILINEAR)
        mask = mask.resize(new_size, Image.Resampling.NEAREST)
        g_left, g_top, g_right, g_bottom = mask.getbbox() or (0, 0, 1, 1)
        g_w, g_h = g_right - g_left, g_bottom - g_top
    x = rng.randint(0, width - g_w) - g_left
    y = rng.randint(0, height - g_h) - g_top
    return layer, mask, x, y, (x + g_left, y + g_top, x + g_right, y + g_bottom)


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
    ``"rooms"`` (see :func:`_render_room`), a look the studio-trained models never saw.
    """
    if style == "rooms":
        return _render_room(product, view, seed=seed, size=size)
    if style != "studio":
        raise ValueError(f"unknown synthetic style {style!r}: use one of {', '.join(STYLES)}")
    height = size[1]
    rng = _rng(seed, product.product_id, view)
    image = _background(rng, size)

    garment_h = height * rng.uniform(0.45, 0.85)
    layer, garment_mask = _dressed_figure(rng, product, garment_h)
    angle = rng.uniform(-8, 8)
    flip = rng.random() < 0.5
    layer, garment_mask = _turn(layer, garment_mask, angle, flip)
    layer, garment_mask, x, y, box = _place(rng, layer, garment_mask, size)
    _draw_props(rng, image, box)
    image.paste(layer, (x, y), layer)

    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.15))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.85, 1.15))
    return image, box


def _shade(color: tuple[int, ...], amount: int) -> tuple[int, int, int]:
    r, g, b = (max(0, min(255, c + amount)) for c in color[:3])
    return r, g, b


def _room(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A cluttered room: wall and floor, a window, frames, a shelf of books, a sofa or a
    table, a rug — edges and colour blobs everywhere, unlike the studio backdrop."""
    width, height = size
    wall = tuple(rng.randint(90, 235) for _ in range(3))
    image = Image.new("RGB", size, wall)
    draw = ImageDraw.Draw(image)
    floor_y = int(height * rng.uniform(0.55, 0.8))
    floor = tuple(rng.randint(60, 190) for _ in range(3))
    draw.rectangle([0, floor_y, width, height], fill=floor)
    for y in range(floor_y + 8, height, rng.randint(10, 22)):  # floorboards
        draw.line([(0, y), (width, y)], fill=_shade(floor, -25), width=1)
    if rng.random() < 0.7:  # a window, bright
        w, h = int(width * rng.uniform(0.2, 0.4)), int(height * rng.uniform(0.2, 0.35))
        x0, y0 = rng.randint(0, width - w), rng.randint(0, max(1, floor_y - h - 10))
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=(215, 230, 245), outline=(250, 250, 250))
        draw.line([(x0 + w // 2, y0), (x0 + w // 2, y0 + h)], fill=(250, 250, 250), width=3)
        draw.line([(x0, y0 + h // 2), (x0 + w, y0 + h // 2)], fill=(250, 250, 250), width=3)
    for _ in range(rng.randint(1, 3)):  # frames
        w, h = rng.randint(20, 60), rng.randint(20, 60)
        x0, y0 = rng.randint(0, width - w), rng.randint(0, max(1, floor_y - h))
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=tuple(rng.randint(0, 255) for _ in "rgb"))
        draw.rectangle([x0, y0, x0 + w, y0 + h], outline=(60, 40, 20), width=3)
    if rng.random() < 0.6:  # a shelf of books
        shelf_y = rng.randint(int(height * 0.15), max(int(height * 0.16), floor_y - 40))
        x0 = rng.randint(0, width // 2)
        x1 = min(width, x0 + rng.randint(60, 160))
        draw.rectangle([x0, shelf_y, x1, shelf_y + 5], fill=(110, 70, 40))
        x = x0 + 2
        while x < x1 - 6:
            w, h = rng.randint(4, 10), rng.randint(14, 30)
            color = tuple(rng.randint(20, 230) for _ in "rgb")
            draw.rectangle([x, shelf_y - h, x + w, shelf_y], fill=color)
            x += w + 1
    furniture = rng.choice(("sofa", "table", "none"))
    if furniture == "sofa":
        w, h = int(width * rng.uniform(0.4, 0.8)), int(height * rng.uniform(0.15, 0.25))
        x0 = rng.randint(-w // 4, width - 3 * w // 4)
        color = tuple(rng.randint(30, 200) for _ in "rgb")
        draw.rounded_rectangle([x0, floor_y - h, x0 + w, floor_y + 10], radius=12, fill=color)
        for k in range(3):
            cx = x0 + w * (k + 0.5) / 3
            draw.rounded_rectangle(
                [cx - w / 7, floor_y - h + 6, cx + w / 7, floor_y - h / 3],
                radius=8,
                fill=_shade(color, 30),
            )
    elif furniture == "table":
        w = int(width * rng.uniform(0.25, 0.5))
        x0, top = rng.randint(0, width - w), floor_y - rng.randint(30, 70)
        wood = (rng.randint(90, 160), rng.randint(50, 100), rng.randint(20, 60))
        draw.rectangle([x0, top, x0 + w, top + 6], fill=wood)
        for x in (x0 + 4, x0 + w - 8):
            draw.rectangle([x, top, x + 4, floor_y + 8], fill=_shade(wood, -30))
        vase = tuple(rng.randint(40, 240) for _ in "rgb")
        vx = x0 + rng.randint(4, max(5, w - 20))
        draw.ellipse([vx, top - 24, vx + 16, top], fill=vase)
    if rng.random() < 0.6:  # a rug
        w = int(width * rng.uniform(0.4, 0.9))
        x0, y0 = rng.randint(-w // 4, width - w // 2), rng.randint(floor_y, height - 10)
        rug = tuple(rng.randint(40, 220) for _ in "rgb")
        draw.ellipse([x0, y0, x0 + w, y0 + int(w * 0.25)], fill=rug, outline=_shade(rug, -50))
    return image


def _bystander(rng: random.Random, image: Image.Image, floor_y: int) -> None:
    """A person-like figure in other clothes (trousers, a top, sometimes a coat): skin,
    fabric and a human outline that are *not* the product."""
    width, height = image.size
    draw = ImageDraw.Draw(image)
    tall = height * rng.uniform(0.4, 0.95)
    cx = rng.uniform(0, width)
    feet = min(height + tall * 0.1, floor_y + rng.uniform(0, height - floor_y + 20))
    head = tall * 0.065
    skin = rng.choice(_SKIN)
    top_color = rng.choice(list(COLORS.values()))
    legs = tuple(rng.randint(20, 140) for _ in "rgb")
    y_head = feet - tall
    draw.ellipse([cx - head, y_head, cx + head, y_head + 2.2 * head], fill=skin)
    shoulder_y, hip_y = y_head + 2.6 * head, feet - tall * 0.48
    half = tall * rng.uniform(0.1, 0.14)
    draw.polygon(
        [
            (cx - half, shoulder_y),
            (cx + half, shoulder_y),
            (cx + half * 0.85, hip_y),
            (cx - half * 0.85, hip_y),
        ],
        fill=top_color,
    )
    for sign in (-1, 1):
        draw.line(
            [(cx + sign * half, shoulder_y + 4), (cx + sign * half * 1.5, hip_y)],
            fill=top_color if rng.random() < 0.5 else skin,
            width=max(2, int(tall * 0.04)),
        )
        draw.line(
            [(cx + sign * half * 0.45, hip_y), (cx + sign * half * 0.55, feet)],
            fill=legs,
            width=max(3, int(tall * 0.06)),
        )


def _occlude(
    rng: random.Random, image: Image.Image, mask: Image.Image, box: tuple[int, int, int, int]
) -> None:
    """Cover a side or the bottom of the garment (a bag, a chair back, a coat's edge):
    drawn on the photo and cut out of the visible-garment ``mask``."""
    left, top, right, bottom = box
    w, h = right - left, bottom - top
    side = rng.choice(("left", "right", "bottom"))
    share = rng.uniform(0.15, 0.35)
    if side == "left":
        shape = [left - 10, top + rng.uniform(0.2, 0.6) * h, left + share * w, bottom + 10]
    elif side == "right":
        shape = [right - share * w, top + rng.uniform(0.2, 0.6) * h, right + 10, bottom + 10]
    else:
        shape = [left + rng.uniform(-0.2, 0.4) * w, bottom - share * h, right + 10, bottom + 10]
    color = tuple(rng.randint(20, 220) for _ in "rgb")
    ImageDraw.Draw(image).rounded_rectangle(shape, radius=8, fill=color)
    ImageDraw.Draw(mask).rounded_rectangle(shape, radius=8, fill=0)


def _light(rng: random.Random, image: Image.Image) -> Image.Image:
    """Another light: a colour cast (warm bulb, cold daylight, green shade) and a gradient
    from a side or a corner, then brightness and contrast."""
    cast = [rng.uniform(0.8, 1.2) for _ in range(3)]
    channels = [
        band.point(lambda v, f=factor: min(255, int(v * f)))
        for band, factor in zip(image.split(), cast, strict=True)
    ]
    image = Image.merge("RGB", channels)
    # Rotated at twice the size and cut from the middle: no corner left unlit by rotate().
    gradient = Image.linear_gradient("L").resize((512, 512), Image.Resampling.BILINEAR)
    gradient = gradient.rotate(rng.uniform(0, 360), resample=Image.Resampling.BILINEAR)
    depth = rng.randint(90, 170)
    gradient = gradient.crop((128, 128, 384, 384)).resize(image.size, Image.Resampling.BILINEAR)
    gradient = gradient.point(lambda v: v * depth // 255)
    image = Image.composite(Image.new("RGB", image.size, (0, 0, 0)), image, gradient)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.35))
    return ImageEnhance.Contrast(image).enhance(rng.uniform(0.75, 1.2))


def _render_room(
    product: ProductSpec, view: int, *, seed: int, size: tuple[int, int]
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The ``rooms`` style: the product, small or large and anywhere in the frame, in a
    cluttered room among bystanders, partly covered in half of the views, under a cast and
    a gradient of light; its proportions are its own (wider or narrower than in the studio,
    the same in every view). The box is the tight box of the garment's *visible* pixels."""
    height = size[1]
    rng = _rng(seed, "rooms", product.product_id, view)
    image = _room(rng, size)
    floor_y = int(height * 0.7)
    for _ in range(rng.randint(1, 2)):
        _bystander(rng, image, floor_y)

    garment_h = height * rng.uniform(0.22, 0.75)
    layer, garment_mask = _dressed_figure(rng, product, garment_h)
    stretch = _rng(product.product_id, "rooms-proportions").uniform(0.75, 1.35)
    stretched = (max(1, round(layer.width * stretch)), layer.height)
    layer = layer.resize(stretched, Image.Resampling.BILINEAR)
    garment_mask = garment_mask.resize(stretched, Image.Resampling.NEAREST)
    layer, garment_mask = _turn(layer, garment_mask, rng.uniform(-15, 15), rng.random() < 0.5)
    layer, garment_mask, x, y, box = _place(rng, layer, garment_mask, size)
    _draw_props(rng, image, box)
    image.paste(layer, (x, y), layer)
    visible = Image.new("L", size, 0)
    visible.paste(garment_mask, (x, y))
    if rng.random() < 0.5:
        _occlude(rng, image, visible, box)
    image = _light(rng, image)
    left, top, right, bottom = visible.getbbox() or box
    return image, (left, top, right, bottom)


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
