"""Search by uploaded photo: cost of locate + encode per candidate, with quality in the same run.

    python bench/upload_quality.py [--products 40] [--views 4] [--timed 40]

Generates a synthetic catalog, annotates the first half of its products, trains a locator
with the real ``train-locator`` flow, and uses the other half — products the locator never
saw — as the held-out catalog. The gallery is what an index holds today: each held-out
photo's 224×224 crop of its box located at the stored model's scales. Every held-out photo
is then uploaded once per candidate (candidates alternate photo by photo, so load from other
jobs hits them alike); each upload is decoded, located, cropped and encoded into the query
vector ``search_by_image`` would search with. Printed per candidate: p50/p99 ms per upload
(the first ``--timed`` photos), locator mean IoU against the true boxes, and retrieval
mAP@10 of the query vectors against the gallery (the query photo itself left out; same
product = relevant). A candidate is adoptable when both quality figures stay within 0.01
of today's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

TOLERANCE = 0.01


def _iou(a, b) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, right - left) * max(0.0, bottom - top)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area > 0 else 0.0


def _map_at_10(queries: np.ndarray, gallery: np.ndarray, labels: np.ndarray) -> float:
    from tiefvision_core.similarity.retrieval import retrieval_scores

    scores = queries.astype(np.float32) @ gallery.astype(np.float32).T
    np.fill_diagonal(scores, -np.inf)  # the uploaded photo itself is in the catalog
    neighbours = np.argsort(-scores, axis=1)[:, :10]
    return retrieval_scores(neighbours, labels).map_at_10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=40)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--timed", type=int, default=40, help="Held-out photos timed.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="Timed rounds per photo.")
    parser.add_argument("--quick", action="store_true", help="Fewer scale subsets.")
    args = parser.parse_args()

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    import pandas as pd
    import torch
    from torchvision.ops import roi_align

    from flows.train_locator import train_locator
    from tiefvision_cli.demo import annotated_half
    from tiefvision_core.annotations.database import database_url_for
    from tiefvision_core.annotations.repository import AnnotationDatabase
    from tiefvision_core.catalog.imaging import decode_image
    from tiefvision_core.catalog.ingest import ingest_catalog
    from tiefvision_core.catalog.manifest import image_id_for, read_manifest
    from tiefvision_core.catalog.synthetic import generate_catalog
    from tiefvision_core.config import load_settings
    from tiefvision_core.encoders import get_encoder
    from tiefvision_core.encoding.pixels import encode_crops, whole_pixels
    from tiefvision_core.index.search import query_box, query_scales
    from tiefvision_core.locator.locate import locate_image
    from tiefvision_core.locator.model_files import load_locator
    from tiefvision_core.similarity.unsupervised import similarity_grid, similarity_vectors
    from tiefvision_core.storage.layout import LOCATOR_CURRENT
    from tiefvision_core.storage.stores import LocalStore
    from tiefvision_core.storage.urls import open_store

    torch.set_num_threads(args.threads)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="tiefvision-bench-upload-"))
    catalog = root / "catalog"
    store_url = (root / "store").as_uri()
    settings = load_settings(store_url=store_url)
    train_s = 0.0
    if (root / "store" / LOCATOR_CURRENT).exists():  # --workdir of an earlier run: reuse it
        store = open_store(store_url)
        _, annotated = annotated_half(catalog)
    else:
        generate_catalog(catalog, products=args.products, views=args.views, seed=7)
        store = open_store(store_url)
        ingest_catalog(LocalStore(catalog / "images", create=False), store)
        boxes_csv, annotated = annotated_half(catalog)
        with AnnotationDatabase(database_url_for(settings)) as annotations:
            annotations.import_boxes(boxes_csv, read_manifest(store))
        started = time.perf_counter()
        train_locator(store=store_url)
        train_s = time.perf_counter() - started

    encoder = get_encoder(settings.encoder)
    truth = pd.read_csv(catalog / "boxes.csv")
    truth["image_id"] = truth["image"].map(image_id_for)
    held = truth[~truth["image_id"].isin(annotated)].reset_index(drop=True)
    photos = [(catalog / "images" / rel).read_bytes() for rel in held["image"]]
    true_boxes = held[["left", "top", "right", "bottom"]].to_numpy(float)
    labels = held["image"].str.split("/").str[0].to_numpy()
    model = load_locator(store, encoder_version=encoder.version)
    trained = model.scales

    def vector(maps: np.ndarray) -> np.ndarray:
        return similarity_vectors(similarity_grid(maps))[0]

    def crop_encode(image, box) -> np.ndarray:
        return vector(encode_crops(encoder, [image], [tuple(box)]).cpu().numpy())

    def today(data: bytes):
        # search_by_image today: load the current locator per upload, all trained scales.
        image = decode_image(data, max_pixels=settings.max_image_pixels)
        current = load_locator(store, store.read_pointer(LOCATOR_CURRENT))
        box = locate_image(current, encoder, image).box
        return box, crop_encode(image, box)

    def adopted(data: bytes):
        # search_by_image now: the model cached per version, located at QUERY_SCALES.
        image = decode_image(data, max_pixels=settings.max_image_pixels)
        box = query_box(store, encoder, image)
        return box, crop_encode(image, box)

    def scales(chosen: tuple[int, ...]) -> Callable:
        def run(data: bytes):
            image = decode_image(data, max_pixels=settings.max_image_pixels)
            box = locate_image(model, encoder, image, scales=chosen).box
            return box, crop_encode(image, box)

        return run

    grid = encoder.geometry.grid
    stride = model.geometry.stride
    crop_side = encoder.preprocessing.crop_size

    def from_maps(data: bytes):
        # The crop's grid pooled out of the locate maps (roi_align on the box) at the scale
        # where the box is nearest the canonical crop size: no second forward pass.
        image = decode_image(data, max_pixels=settings.max_image_pixels)
        maps = []
        with torch.inference_mode():
            for side in trained:
                pixels, _ = whole_pixels(image, side=side, multiple=stride)
                scale_xy = (pixels.shape[2] / image.width, pixels.shape[1] / image.height)
                fmap = encoder.encode_maps(pixels.unsqueeze(0).to(encoder.device)).float().cpu()
                maps.append((fmap, scale_xy))
            box = model.locate(maps, image.size).box
            longer = max(box[2] - box[0], box[3] - box[1])
            fmap, (sx, sy) = min(maps, key=lambda m: abs(longer * m[1][0] - crop_side))
            roi = torch.tensor(
                [
                    [
                        0,
                        box[0] * sx / stride,
                        box[1] * sy / stride,
                        box[2] * sx / stride,
                        box[3] * sy / stride,
                    ]
                ],
                dtype=torch.float32,
            )
            crop = roi_align(fmap, roi, output_size=grid, sampling_ratio=2, aligned=True)
        return box, vector(crop.numpy())

    candidates: dict[str, Callable] = {"today (load per upload, all scales)": today}
    candidates[f"adopted: query_box, {','.join(map(str, query_scales(trained)))}"] = adopted
    subsets = [trained, (320, 448), (448, 576), (320, 576), (448,), (576,), (320,)]
    if args.quick:  # today, the adopted default and the next smaller subset
        subsets = [(576,)]
    for subset in subsets:
        candidates[f"cached model, scales {','.join(map(str, subset))}"] = scales(subset)
    if not args.quick:
        candidates["crop from locate maps (no 2nd pass)"] = from_maps

    names = list(candidates)
    for name in names:  # warm-up: first forward of each input size
        candidates[name](photos[0])
    boxes = {name: [] for name in names}
    vectors = {name: [] for name in names}
    for data in photos:  # quality: every held-out photo once per candidate
        for name in names:
            box, query = candidates[name](data)
            boxes[name].append(box)
            vectors[name].append(query)
    # Cost: the first --timed photos, --repeats rounds, candidates alternating photo by
    # photo; wall and CPU time (CPU time is what other jobs on a shared box disturb least).
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    best = {name: [] for name in names}
    for i, data in enumerate(photos[: args.timed]):
        runs: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(args.repeats):
            shift = (i + round_) % len(names)
            for name in names[shift:] + names[:shift]:
                started, started_cpu = time.perf_counter(), time.process_time()
                candidates[name](data)
                runs[name].append((time.perf_counter() - started) * 1000)
                cpu[name].append((time.process_time() - started_cpu) * 1000)
        for name in names:
            wall[name].extend(runs[name])
            best[name].append(min(runs[name]))

    gallery = np.stack(vectors[names[0]])
    print(
        f"\nencoder {encoder.version}, {args.threads} threads, locator trained on "
        f"{len(annotated)} photos in {train_s:.0f} s at scales {trained}; "
        f"{len(photos)} held-out photos of {len(set(labels))} unseen products, "
        f"{min(args.timed, len(photos))} timed × {args.repeats} per candidate, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'candidate':<40}{'p50':>9}{'p99':>9}{'min/photo':>11}{'CPU p50':>10}"
        f"{'mean IoU':>10}{'mAP@10':>9}  within 0.01"
    )
    base_iou = base_map = 0.0
    for name in names:
        iou = float(np.mean([_iou(b, t) for b, t in zip(boxes[name], true_boxes, strict=True)]))
        mean_ap = _map_at_10(np.stack(vectors[name]), gallery, labels)
        if name == names[0]:
            base_iou, base_map = iou, mean_ap
        ok = iou >= base_iou - TOLERANCE and mean_ap >= base_map - TOLERANCE
        print(
            f"{name:<40}{np.percentile(wall[name], 50):>7.1f}ms"
            f"{np.percentile(wall[name], 99):>7.1f}ms{np.median(best[name]):>9.1f}ms"
            f"{np.percentile(cpu[name], 50):>8.1f}ms{iou:>10.3f}{mean_ap:>9.4f}  {ok}"
        )


if __name__ == "__main__":
    main()
