"""Class-level retrieval on real photos: the unsupervised space vs the global-average-pool
baseline, measured in the same run.

    python bench/clothing.py --images ../shared/data/clothing-small [--locator-store URL]

Every photo is a query once, the rest of the set is the gallery, a result is relevant when
it has the query's class (the folder name). All spaces come from the same encodings
(EfficientNet-Lite0, canonical 224×224 input, 7×7 map): the baseline pools each map to one
vector (global average pool); the unsupervised space is the mean cosine of corresponding
positions on the similarity grid (``similarity_grid``, 3×3), shown beside the full 7×7 map
it replaced. With ``--locator-store`` (a store holding a trained locator, e.g. the demo's)
the photos are first located as the catalog pipeline would (the whole photo where the
locator is unsure) and the same spaces are scored on those crops.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np


def encode_requests(runtime, requests) -> tuple[list[str], np.ndarray]:
    ids, maps = [], []
    for batch in runtime.stream(requests):
        ids += [r.image_id for r in batch.requests]
        maps.append(batch.maps)
    return ids, np.concatenate(maps)


def photo_requests(images: Path, labels_csv: Path | None = None) -> tuple[list, dict[str, str]]:
    """Whole-photo crop requests for every JPEG under ``images`` and each one's label: its
    folder's name (clothing-small's classes), or the ``product`` column of ``labels_csv``
    (``image,product``, grocery-packages' products.csv)."""
    from tiefvision_core.catalog.imaging import inspect_image
    from tiefvision_core.config import load_settings
    from tiefvision_core.encoding.requests import CropRequest

    images = images.resolve()
    max_pixels = load_settings().max_image_pixels
    products: dict[str, str] = {}
    if labels_csv is not None:
        import csv

        with labels_csv.open(newline="") as rows:
            products = {row["image"]: row["product"] for row in csv.DictReader(rows)}
    requests, labels = [], {}
    for path in sorted(images.rglob("*.jpg")):
        data = path.read_bytes()
        info = inspect_image(data, max_pixels=max_pixels)
        image_id = str(path.relative_to(images))
        labels[image_id] = products[image_id] if products else path.parent.name
        requests.append(
            CropRequest(
                image_id, hashlib.sha256(data).hexdigest(), path.as_uri(), info.width, info.height
            )
        )
    return requests, labels


def scores_cells(vectors: np.ndarray, labels: np.ndarray) -> str:
    """P@1, P@5 and mAP@10 of every photo as a query against the others, as table cells."""
    from tiefvision_core.similarity.retrieval import score_vectors

    s = score_vectors(vectors, labels)
    return f"{s.precision_at_1:>8.3f}{s.precision_at_5:>8.3f}{s.map_at_10:>8.3f}"


def _located(requests, store_url: str, encoder):
    from dataclasses import replace

    from tiefvision_core.catalog.imaging import decode_image
    from tiefvision_core.config import load_settings
    from tiefvision_core.locator.locate import locate_image
    from tiefvision_core.locator.model_files import load_locator
    from tiefvision_core.storage.urls import open_store

    model = load_locator(open_store(store_url, create=False), encoder_version=encoder.version)
    located, fallbacks = [], 0
    max_pixels = load_settings().max_image_pixels
    for request in requests:
        image = decode_image(Path(request.uri[7:]).read_bytes(), max_pixels=max_pixels)
        found = locate_image(model, encoder, image)
        fallbacks += found.fallback
        located.append(replace(request, box=tuple(found.box)))
    return located, fallbacks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--locator-store", help="store URL with a trained locator")
    args = parser.parse_args()

    from tiefvision_core.encoding.runtime import RuntimeConfig
    from tiefvision_core.similarity.unsupervised import (
        global_pool_vectors,
        similarity_grid,
        similarity_vectors,
    )

    requests, labels = photo_requests(args.images)
    runtime = RuntimeConfig(encoder=args.encoder).build()
    crops = [("whole photo", requests)]
    if args.locator_store:
        located, fallbacks = _located(requests, args.locator_store, runtime.encoder)
        crops.append((f"located ({fallbacks} whole)", located))
    print(
        f"{len(requests)} photos in {len(set(labels.values()))} classes, "
        f"encoder {runtime.encoder.version}"
    )
    print(f"{'crop':<22}{'space':<40}{'P@1':>8}{'P@5':>8}{'mAP@10':>8}")
    for crop, crop_requests in crops:
        ids, maps = encode_requests(runtime, crop_requests)
        classes = np.array([labels[i] for i in ids])
        for name, vectors in (
            ("baseline: global average pool", global_pool_vectors(maps)),
            ("mean cosine, full 7x7 map", similarity_vectors(maps)),
            ("unsupervised: mean cosine, 3x3 grid", similarity_vectors(similarity_grid(maps))),
        ):
            print(f"{crop:<22}{name:<40}{scores_cells(vectors, classes)}")
    runtime.close()


if __name__ == "__main__":
    main()
