"""Deep Ranking vs the unsupervised space on held-out products of a synthetic catalog.

    python bench/similarity.py [--products 120] [--views 4] [--crop truth|whole]

A synthetic catalog (dress-like products in several views), encoded on the canonical grid
with mirrors — cropped to the true box (``--crop truth``: the located crop of a perfect
locator, so the number measures similarity, not location) or whole. A quarter of the
products is scored; a quarter of the rest stops training (validation) and the projection
trains on the others (``fit_held_out``, the code ``tiefvision train-triplets`` runs).
Printed: triplet accuracy and P@1 / P@5 / mAP@10 (same product = relevant) of both spaces
on the scored products, and the gain in points. Targets (issue 5): ≥ 10
points of triplet accuracy and ≥ 15 points of mAP@10.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _requests(catalog: Path, crop: str):
    from tiefvision_core.catalog.imaging import inspect_image
    from tiefvision_core.config import load_settings
    from tiefvision_core.encoding.requests import CropRequest

    boxes = pd.read_csv(catalog / "boxes.csv").set_index("image")
    products = pd.read_csv(catalog / "products.csv").set_index("image")
    requests, labels = [], {}
    max_pixels = load_settings().max_image_pixels
    for image in products.index:
        path = catalog / "images" / image
        data = path.read_bytes()
        info = inspect_image(data, max_pixels=max_pixels)
        box = tuple(int(v) for v in boxes.loc[image]) if crop == "truth" else None
        requests.append(
            CropRequest(
                image,
                hashlib.sha256(data).hexdigest(),
                path.as_uri(),
                info.width,
                info.height,
                box=box,
            )
        )
        labels[image] = products.loc[image, "product_id"]
    return requests, labels


def _encode(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid maps of every photo and of its mirror (similarity grid), and product labels."""
    from tiefvision_core.catalog.synthetic import generate_catalog
    from tiefvision_core.encoding.runtime import RuntimeConfig
    from tiefvision_core.similarity.unsupervised import similarity_grid

    with tempfile.TemporaryDirectory() as tmp:
        catalog = Path(tmp) / "catalog"
        generate_catalog(catalog, products=args.products, views=args.views, seed=args.seed)
        requests, labels = _requests(catalog, args.crop)
        runtime = RuntimeConfig().build()
        plain, mirrored = {}, {}
        for batch in runtime.stream(requests, flips=True):
            for request, fmap, flipped in zip(
                batch.requests, batch.maps, batch.flipped, strict=True
            ):
                (mirrored if flipped else plain)[request.image_id] = fmap
        runtime.close()
    ids = sorted(plain)
    return (
        similarity_grid(np.stack([plain[i] for i in ids])),
        similarity_grid(np.stack([mirrored[i] for i in ids])),
        np.array([labels[i] for i in ids]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=120)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--crop", choices=("truth", "whole"), default="truth")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--cache", type=Path, help="An .npz of the encodings: written once, then reused."
    )
    args = parser.parse_args()

    from tiefvision_core.similarity.deep_ranking import DeepRankingConfig, fit_held_out
    from tiefvision_core.similarity.triplets import held_out_split

    started = time.perf_counter()
    if args.cache and args.cache.is_file():
        cached = np.load(args.cache)
        maps, flipped, label_array = cached["maps"], cached["flipped"], cached["labels"]
    else:
        maps, flipped, label_array = _encode(args)
        if args.cache:
            np.savez(args.cache, maps=maps, flipped=flipped, labels=label_array)
    encode_seconds = time.perf_counter() - started
    config = DeepRankingConfig()
    split = held_out_split(label_array, config)
    started = time.perf_counter()
    fit = fit_held_out(maps, label_array, split, flipped=flipped, config=config)
    train_seconds = time.perf_counter() - started
    trained = fit.trained
    print(
        f"{len(label_array)} photos of {args.products} products ({args.crop} crops), "
        f"{int(split.sum())} photos of {len(set(label_array[split]))} held-out products, "
        f"{len(fit.test_triplets)} held-out triplets; encoding {encode_seconds:.0f} s, "
        f"training {train_seconds:.0f} s ({len(trained.history)} epochs, best "
        f"{trained.best_epoch})"
    )
    from tiefvision_core.similarity.deep_ranking import space_vectors, unsupervised_vectors
    from tiefvision_core.similarity.retrieval import score_vectors

    test_rows = [int(i) for i in np.flatnonzero(split)]
    assert fit.validation is not None
    print(
        f"stopped on {len(set(label_array[fit.validation]))} validation products "
        f"({len(fit.validation_triplets)} triplets), none of them scored"
    )
    print(f"{'space':<14}{'triplet acc':>12}{'P@1':>8}{'P@5':>8}{'mAP@10':>9}")
    for name, accuracy, vectors in (
        (
            "unsupervised",
            fit.unsupervised_accuracy,
            np.asarray(unsupervised_vectors(maps)[test_rows], np.float32),
        ),
        ("supervised", fit.supervised_accuracy, space_vectors(trained.net, maps, test_rows)),
    ):
        s = score_vectors(vectors, label_array[test_rows])
        print(
            f"{name:<14}{accuracy:>12.3f}{s.precision_at_1:>8.3f}{s.precision_at_5:>8.3f}"
            f"{s.map_at_10:>9.3f}"
        )
    accuracy_gain = 100 * (fit.supervised_accuracy - fit.unsupervised_accuracy)
    map_gain = 100 * (fit.supervised_map10 - fit.unsupervised_map10)
    print(
        f"gain: {accuracy_gain:+.1f} points triplet accuracy (target ≥ +10), "
        f"{map_gain:+.1f} points mAP@10 (target ≥ +15)"
    )


if __name__ == "__main__":
    main()
