"""More classes, and what they buy: Deep Ranking trained with and without the 50 kinds of
``grocery-produce``, scored on the ``grocery-packages`` products it never trained on
(issue 30, item 2).

    python bench/produce.py [--data ../shared/data] [--workdir /tmp/gen] [--seeds 0,1,2]

The held-out products are the generalisation bench's (``pick(products, 5, seed)``; seed 0:
the five of ``bench/generalisation.py --part grocery``), their photos the queries and the
gallery, each figure beside the unsupervised space of the same photos, in the same run:

* ``packages`` — trained on the other 8 packaged products (today's figure);
* ``produce + packages`` — the 50 produce kinds added to those 8;
* ``produce`` — the 50 produce kinds alone (no packaged product at all).

Grid encodings are cached in ``--workdir`` (``grocery/`` and ``produce/``), so a rerun only
trains. The gain's 95 % interval is the one ``tiefvision evaluate`` reports (products
resampled). Minutes of training per 1,000 training photos are printed beside each row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
from _common import use_encoder  # noqa: E402
from generalisation import catalog_grids, pick, retrieval  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gen"))
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    use_encoder("efficientnet_lite0")
    packages = catalog_grids(args.workdir / "grocery", args.data / "grocery-packages")[1:]
    produce = catalog_grids(args.workdir / "produce", args.data / "grocery-produce")[1:]
    produce = (produce[0], produce[1], np.char.add("produce:", produce[2]))
    results = []
    print(f"{'seed':<6}{'trained on':<22}{'classes':>8}{'photos':>8}"
          f"{'unsup.':>9}{'sup.':>8}{'gain':>8}{'95 % interval':>18}{'min/1k':>8}")  # fmt: skip
    for seed in (int(s) for s in args.seeds.split(",")):
        held = pick(sorted(set(packages[2])), 5, seed)
        kept = ~np.isin(packages[2], held)
        variants = {
            "packages": [packages],
            "produce + packages": [packages, produce],
            "produce": [tuple(part[~kept] for part in packages), produce],
        }
        for name, parts in variants.items():
            maps = np.concatenate([p[0] for p in parts])
            flipped = np.concatenate([p[1] for p in parts])
            labels = np.concatenate([p[2] for p in parts])
            result = retrieval(maps, flipped, labels, held)
            trained = int((~np.isin(labels, held)).sum())
            unsupervised = result["unsupervised"]["held_out_gallery"]["map_at_10"]
            supervised = result["supervised"]["held_out_gallery"]["map_at_10"]
            low, high = result["gain_interval"]
            per_k = result["train_seconds"] / 60 / max(trained, 1) * 1000
            classes = len(set(labels[~np.isin(labels, held)]))
            print(f"{seed:<6}{name:<22}{classes:>8}{trained:>8}{unsupervised:>9.3f}"
                  f"{supervised:>8.3f}{supervised - unsupervised:>+8.3f}"
                  f"{f'[{low:+.3f}, {high:+.3f}]':>18}{per_k:>8.2f}", flush=True)  # fmt: skip
            results.append({"seed": seed, "trained_on": name, "classes": classes, **result})
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
