"""Synthetic products and the garment drawn for each: the attributes that make a product
recognisable across its views (cut, length, colour, pattern), its outline and fabric, and
the mannequin it is worn on — turned and placed in a photo by
:mod:`tiefvision_core.catalog.synthetic_scenes`.

Every random choice comes from a stream of its own (:func:`seeded_rng`), so the same seed
draws the same products and the same photos on every machine.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "COLORS",
    "CUTS",
    "LENGTHS",
    "PATTERNS",
    "SKIN",
    "ProductSpec",
    "dressed_figure",
    "make_products",
    "place",
    "seeded_rng",
    "turn",
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
#: Skin tones of mannequins and bystanders.
SKIN = ((241, 194, 160), (224, 172, 130), (198, 134, 96), (141, 85, 54), (92, 58, 38))


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


def seeded_rng(*parts: object) -> random.Random:
    """An independent, reproducible stream per (seed, product, view, purpose)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def make_products(n: int, *, seed: int = 0) -> list[ProductSpec]:
    """``n`` products with varied cut, length, colour and pattern (about a quarter skirts)."""
    products = []
    names = list(COLORS)
    for index in range(n):
        rng = seeded_rng(seed, "product", index)
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
        rng = seeded_rng(product.product_id, "print")  # the same motif in every view
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


def dressed_figure(
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
        skin = (*rng.choice(SKIN), 255)
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


def turn(
    layer: Image.Image, mask: Image.Image, angle: float, flip: bool
) -> tuple[Image.Image, Image.Image]:
    """Mirror (when ``flip``) and rotate the layer and its mask together."""
    if flip:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    layer = layer.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    mask = mask.rotate(angle, resample=Image.Resampling.NEAREST, expand=True)
    return layer, mask


def place(
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
