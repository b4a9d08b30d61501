"""Where a synthetic product is photographed: the ``studio`` (a plain, graded or walled
backdrop, the mannequin, props beside it) and the ``rooms`` (a cluttered room among
bystanders, the garment partly covered in half of the views, under a cast and a gradient
of light) — a look the studio-trained models never saw.

Both return the photo and the garment's tight box; the products and their garments are
:mod:`tiefvision_core.catalog.synthetic_garments`.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw, ImageEnhance

from tiefvision_core.catalog.synthetic_garments import (
    COLORS,
    SKIN,
    ProductSpec,
    dressed_figure,
    place,
    seeded_rng,
    turn,
)

__all__ = ["room_view", "studio_view"]


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


def studio_view(
    product: ProductSpec, view: int, *, seed: int, size: tuple[int, int]
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The ``studio`` style: one photo of ``product`` and the garment's tight box."""
    height = size[1]
    rng = seeded_rng(seed, product.product_id, view)
    image = _background(rng, size)

    garment_h = height * rng.uniform(0.45, 0.85)
    layer, garment_mask = dressed_figure(rng, product, garment_h)
    angle = rng.uniform(-8, 8)
    flip = rng.random() < 0.5
    layer, garment_mask = turn(layer, garment_mask, angle, flip)
    layer, garment_mask, x, y, box = place(rng, layer, garment_mask, size)
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
    skin = rng.choice(SKIN)
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


def room_view(
    product: ProductSpec, view: int, *, seed: int, size: tuple[int, int]
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The ``rooms`` style: the product, small or large and anywhere in the frame, in a
    cluttered room among bystanders, partly covered in half of the views, under a cast and
    a gradient of light; its proportions are its own (wider or narrower than in the studio,
    the same in every view). The box is the tight box of the garment's *visible* pixels."""
    height = size[1]
    rng = seeded_rng(seed, "rooms", product.product_id, view)
    image = _room(rng, size)
    floor_y = int(height * 0.7)
    for _ in range(rng.randint(1, 2)):
        _bystander(rng, image, floor_y)

    garment_h = height * rng.uniform(0.22, 0.75)
    layer, garment_mask = dressed_figure(rng, product, garment_h)
    stretch = seeded_rng(product.product_id, "rooms-proportions").uniform(0.75, 1.35)
    stretched = (max(1, round(layer.width * stretch)), layer.height)
    layer = layer.resize(stretched, Image.Resampling.BILINEAR)
    garment_mask = garment_mask.resize(stretched, Image.Resampling.NEAREST)
    layer, garment_mask = turn(layer, garment_mask, rng.uniform(-15, 15), rng.random() < 0.5)
    layer, garment_mask, x, y, box = place(rng, layer, garment_mask, size)
    _draw_props(rng, image, box)
    image.paste(layer, (x, y), layer)
    visible = Image.new("L", size, 0)
    visible.paste(garment_mask, (x, y))
    if rng.random() < 0.5:
        _occlude(rng, image, visible, box)
    image = _light(rng, image)
    left, top, right, bottom = visible.getbbox() or box
    return image, (left, top, right, bottom)
