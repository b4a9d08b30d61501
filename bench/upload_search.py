"""Search by uploaded photo, end to end on CPU, against search by a stored id.

    python bench/upload_search.py --store tiefvision-demo/store [--queries 50] [--space S]

A store that holds an index (and, for the located path, a locator): ``make demo`` leaves one
in ``tiefvision-demo/store``. Baseline: ``search_by_id`` — the stored vector, no decoding or
encoding. Real path: ``search_by_image`` on the photo's bytes — decode with the bomb guard,
locate (the current locator, if any), crop, encode on the canonical grid, project for the
supervised space, search. Same queries, same index, same process; p50/p99 and the ratio.
The first call of each path (model loading, first forward) is timed apart as the warm-up.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _timed(call, items) -> tuple[float, np.ndarray]:
    first_started = time.perf_counter()
    call(items[0])
    first = time.perf_counter() - first_started
    times = []
    for item in items[1:]:
        started = time.perf_counter()
        call(item)
        times.append(time.perf_counter() - started)
    return first, np.array(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", required=True, help="Store URL or folder with an index.")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--space", default="unsupervised")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()

    import torch

    from tiefvision_core.catalog.manifest import read_manifest
    from tiefvision_core.config import load_settings
    from tiefvision_core.encoders import get_encoder
    from tiefvision_core.index.search import search_by_id, search_by_image
    from tiefvision_core.storage.urls import open_store, read_object
    from tiefvision_core.vector_index.versions import open_index

    settings = load_settings(store_url=args.store)
    torch.set_num_threads(settings.workers)
    store = open_store(settings.store_url, settings, create=False)
    opened = open_index(store, args.space)
    encoder = get_encoder(settings.encoder)
    manifest = read_manifest(store).to_pandas()
    usable = manifest[manifest["status"] == "ok"].head(args.queries + 1)
    ids = list(usable["image_id"])
    photos = [read_object(uri) for uri in usable["source_uri"]]

    id_first, by_id = _timed(lambda i: search_by_id(opened, i, k=args.k), ids)
    image_first, by_image = _timed(
        lambda data: search_by_image(
            store, opened, encoder, data, max_pixels=settings.max_image_pixels, k=args.k
        ),
        photos,
    )
    print(
        f"{len(ids) - 1} queries, index {args.space} {opened.version} "
        f"({len(opened.ids)} rows), {settings.workers} threads"
    )
    print(f"{'path':<34}{'first':>9}{'p50':>10}{'p99':>10}")
    for name, first, times in (
        ("search by id (baseline)", id_first, by_id),
        ("search by uploaded photo", image_first, by_image),
    ):
        print(
            f"{name:<34}{first * 1000:>7.0f}ms{np.percentile(times, 50):>8.1f}ms"
            f"{np.percentile(times, 99):>8.1f}ms"
        )
    ratio = np.percentile(by_image, 50) / np.percentile(by_id, 50)
    print(f"upload / id p50: {ratio:.0f}x (the cost of decode + locate + encode)")


if __name__ == "__main__":
    main()
