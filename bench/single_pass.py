"""A box's encoding read off the whole photo's map, against today's crop pass: retrieval
on real photos and on small products in clutter, in one run (issue 29, item 2).

    python bench/single_pass.py [--data ../shared/data] [--style DIR] [--sides 320,448]

Today a box crop is a CNN pass of its own: the box resized to the encoder's 224×224 square
(7×7 map), then pooled to the 3×3 similarity grid. The one-pass alternative reads it off
the map of the whole photo (aspect kept, longer side ``--sides``): RoIAlign of the box to
7×7, then the same 3×3 grid — the seed's equivalence of crops and map positions. Rows:

* ``crop 224`` — today's representation (one more pass per photo);
* ``map S`` — every box from the side-S map;
* ``map S where ≥ 224`` — from the map where the box's shorter side spans at least 224
  input pixels there (the map resolves it as finely as the crop would), else the crop pass.

Catalogs: ``clothing-small`` (713 photos, whole photo = box, class = relevant),
``grocery-packages`` (771 photos, whole photo, product = relevant) and, with ``--style``
(a ``bench/generalisation.py`` style catalog folder), the synthetic rooms and studio photos
with their true boxes (product = relevant). Every photo is a query against the rest.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
from clothing import photo_requests  # noqa: E402


def _maps(runtime, requests) -> dict[str, np.ndarray]:
    out = {}
    for batch in runtime.stream(requests):
        for request, fmap in zip(batch.requests, batch.maps, strict=True):
            out[request.image_id] = fmap
    return out


def _pooled(request, fmap: np.ndarray, stride: int) -> np.ndarray:
    """RoIAlign of ``request``'s box (photo pixels) on its whole-photo map, to 7×7."""
    import torch
    from torchvision.ops import roi_align

    width, height = request.whole_size(stride)
    sx, sy = width / request.width, height / request.height
    left, top, right, bottom = request.full_box
    box = torch.tensor(
        [[0, left * sx / stride, top * sy / stride, right * sx / stride, bottom * sy / stride]],
        dtype=torch.float32,
    )
    tensor = torch.from_numpy(fmap).unsqueeze(0).float()
    return roi_align(tensor, box, output_size=7, sampling_ratio=2, aligned=True)[0].numpy()


def _spans(request, side: int, stride: int, crop: int) -> bool:
    width, height = request.whole_size(stride)
    left, top, right, bottom = request.full_box
    shorter = min((right - left) * width / request.width, (bottom - top) * height / request.height)
    return shorter >= crop


def _scores(maps: np.ndarray, labels: np.ndarray) -> str:
    from tiefvision_core.similarity.retrieval import score_vectors
    from tiefvision_core.similarity.unsupervised import similarity_grid, similarity_vectors

    s = score_vectors(similarity_vectors(similarity_grid(maps)), labels)
    return f"{s.precision_at_1:>8.4f}{s.map_at_10:>9.4f}"


def study(runtime, name: str, requests: list, labels: list[str], sides: list[int]) -> None:
    stride = runtime.encoder.geometry.stride
    crop = runtime.encoder.preprocessing.crop_size
    truth = np.array(labels)
    started = time.perf_counter()
    crops = _maps(runtime, requests)
    crop_maps = np.stack([crops[r.image_id] for r in requests])
    print(f"{name:<18}{'crop 224':<26}{_scores(crop_maps, truth)}"
          f"{time.perf_counter() - started:>8.1f} s", flush=True)  # fmt: skip
    for side in sides:
        started = time.perf_counter()
        whole = [replace(r, whole_side=side) for r in requests]
        maps = _maps(runtime, whole)
        pooled = np.stack([_pooled(r, maps[r.image_id], stride) for r in whole])
        seconds = time.perf_counter() - started
        print(f"{name:<18}{f'map {side}':<26}{_scores(pooled, truth)}{seconds:>8.1f} s")
        spans = np.array([_spans(r, side, stride, crop) for r in whole])
        mixed = np.where(spans[:, None, None, None], pooled, crop_maps)
        label = f"map {side} where ≥ {crop} ({spans.mean():.0%})"
        print(f"{name:<18}{label:<26}{_scores(mixed, truth)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--style", type=Path, help="a bench/generalisation.py style catalog")
    parser.add_argument("--sides", default="320,448")
    args = parser.parse_args()
    from tiefvision_core.encoding.runtime import RuntimeConfig

    runtime = RuntimeConfig(backend="auto").build()
    sides = [int(s) for s in args.sides.split(",")]
    print(f"{'catalog':<18}{'encoding of the box':<26}{'P@1':>8}{'mAP@10':>9}{'encode':>10}")
    requests, labels = photo_requests(args.data / "clothing-small")
    study(runtime, "clothing-small", requests, [labels[r.image_id] for r in requests], sides)
    grocery = args.data / "grocery-packages"
    requests, labels = photo_requests(grocery / "images", grocery / "products.csv")
    study(runtime, "grocery-packages", requests, [labels[r.image_id] for r in requests], sides)
    if args.style:
        boxes = {r["image"]: r for r in csv.DictReader((args.style / "boxes.csv").open())}
        rows = csv.DictReader((args.style / "products.csv").open())
        products = {r["image"]: r["product_id"] for r in rows}
        every, _ = photo_requests(args.style / "images")
        for style in ("rooms", "studio"):
            chosen = [
                replace(r, box=tuple(int(float(boxes[r.image_id][k])) for k in _COORDS))
                for r in every
                if r.image_id.startswith(f"{style}/")
            ]
            names = [products[r.image_id] for r in chosen]
            study(runtime, f"{style} true boxes", chosen, names, sides)


_COORDS = ("left", "top", "right", "bottom")

if __name__ == "__main__":
    main()
