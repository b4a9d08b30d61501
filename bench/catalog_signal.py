"""Training signal beyond product ids: augmented views as free positives (issue 30, item 1)
and same-brand negatives (item 4), scored on the ``grocery-packages`` products Deep
Ranking never trained on.

    python bench/catalog_signal.py [--data ../shared/data] [--workdir /tmp/gen]
                                   [--seeds 0,1,2] [--views 2]

Each seed holds out the generalisation bench's five packaged products
(``pick(products, 5, seed)``); their photos are the queries and the gallery, scored in both
spaces in the same run. Variants (what training sees besides the 8 products' photos):

* ``packages`` — nothing else (today's training);
* ``+ views`` — ``--views`` augmented views (``similarity/views.py``: a random crop of
  50–100 % of the area, mirrored half the time, colour changed) of every *training* photo,
  each a photo of its product;
* ``+ produce as photos`` — the 3,676 ``grocery-produce`` photos with *no* label: each
  photo and one view of it are a product of their own (instance discrimination), the rest
  of the catalog its negatives;
* ``+ views + produce as photos`` — both;
* ``+ brand negatives`` — no extra photos; each training anchor's negatives start with up to
  5 photos of another product of its brand (``group_negatives``). The brand is the first
  word of the product id (``Alpro-Fresh-Soy-Milk`` → ``Alpro``), what a catalog's brand
  column would hold.

No photo of a held-out or validation product, nor a view of one, reaches training (views
are made of the training products' photos only): the validation products (those that stop
training) are chosen among the packaged training products only, as ``fit_held_out`` would.
Views and grid encodings are cached in ``--workdir``, so a rerun only trains.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
from _common import encode_grids, use_encoder  # noqa: E402
from generalisation import catalog_grids, pick, retrieval  # noqa: E402

P1 = "precision_at_1"


def _views(work: Path, images: Path, names: list[str], view: int) -> np.ndarray:
    """Grid maps of view ``view`` of each of ``names`` (rows in ``names`` order), written
    as JPEGs and encoded once; cached under a digest of the names."""
    from PIL import Image

    from tiefvision_core.similarity.views import augmented_view, view_params

    key = hashlib.sha256(json.dumps([view, names]).encode()).hexdigest()[:12]
    cache = work / f"views-{view}-{key}.npz"
    if cache.is_file():
        return np.load(cache)["maps"]
    folder = work / f"views-{view}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = folder / name
        if not target.is_file():
            with Image.open(images / name) as photo:
                params = view_params(name, view, *photo.size)
                augmented_view(photo, params).save(target, "JPEG", quality=92)
    encoded, maps, _ = encode_grids(folder, dict.fromkeys(names), flips=False)
    assert encoded == sorted(names)
    maps = maps[np.argsort(np.argsort(names))]  # back to ``names`` order
    np.savez(cache, maps=maps)
    return maps


def main() -> None:
    from tiefvision_core.similarity.deep_ranking import DeepRankingConfig
    from tiefvision_core.similarity.triplets import validation_split

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gen"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--variants", default="", help="comma-separated names (default all)")
    args = parser.parse_args()
    use_encoder("efficientnet_lite0")
    pk_dir, pr_dir = args.data / "grocery-packages", args.data / "grocery-produce"
    pk_names, pk_maps, _, pk_labels = catalog_grids(args.workdir / "grocery", pk_dir)
    pr_names, pr_maps, _, _ = catalog_grids(args.workdir / "produce", pr_dir)
    pk_views = [
        _views(args.workdir / "grocery", pk_dir / "images", pk_names, v) for v in range(args.views)
    ]
    pr_view = _views(args.workdir / "produce", pr_dir / "images", pr_names, 0)
    instance = np.array([f"photo:{n}" for n in pr_names])
    config = DeepRankingConfig()
    results = []
    print(f"{'seed':<6}{'variant':<30}{'rows':>7}{'unsup.':>9}{'sup.':>8}{'gain':>8}"
          f"{'95 % interval':>18}{'P@1 u/s':>13}{'min/1k':>8}")  # fmt: skip
    for seed in (int(s) for s in args.seeds.split(",")):
        held = pick(sorted(set(pk_labels)), 5, seed)
        split = np.isin(pk_labels, held)
        validation = validation_split(pk_labels, split, config)
        keep = ~split & ~validation  # views of training products only
        views = (
            np.concatenate([m[keep] for m in pk_views]),
            np.concatenate([pk_labels[keep]] * args.views),
        )
        produce = (np.concatenate([pr_maps, pr_view]), np.concatenate([instance, instance]))
        variants = {
            "packages": [],
            "+ views": [views],
            "+ produce as photos": [produce],
            "+ views + produce as photos": [views, produce],
            "+ brand negatives": [],
        }
        wanted = [v.strip() for v in args.variants.split(",") if v.strip()] or list(variants)
        for name, extra in ((n, variants[n]) for n in wanted):
            maps = np.concatenate([pk_maps, *(e[0] for e in extra)])
            labels = np.concatenate([pk_labels, *(e[1] for e in extra)])
            mask = np.zeros(len(labels), bool)
            mask[: len(pk_labels)] = validation
            brands = np.array([label.split("-")[0] for label in labels])
            result = retrieval(
                maps,
                None,
                labels,
                held,
                validation=mask,
                config=replace(config, group_negatives=5) if "brand" in name else config,
                groups=brands,
            )
            trained = len(labels) - int(np.isin(labels, held).sum()) - int(mask.sum())
            unsup = result["unsupervised"]["held_out_gallery"]
            sup = result["supervised"]["held_out_gallery"]
            low, high = result["gain_interval"]
            per_k = result["train_seconds"] / 60 / max(trained, 1) * 1000
            print(f"{seed:<6}{name:<30}{trained:>7}{unsup['map_at_10']:>9.3f}"
                  f"{sup['map_at_10']:>8.3f}{sup['map_at_10'] - unsup['map_at_10']:>+8.3f}"
                  f"{f'[{low:+.3f}, {high:+.3f}]':>18}"
                  f"{f'{unsup[P1]:.3f}/{sup[P1]:.3f}':>13}{per_k:>8.2f}",
                  flush=True)  # fmt: skip
            results.append({"seed": seed, "variant": name, "training_rows": trained, **result})
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
