"""How far more training data goes: the locator on ccp-dresses and Deep Ranking on
grocery-packages, each trained on growing shares of what the bench holds, scored on the
same held-out photos.

    python bench/learning_curves.py [--part locator|ranking|all] [--data ../shared/data]
                                    [--workdir DIR]

Issue 16's targets (ccp mean IoU ≥ 0.75; Deep Ranking ≥ +0.10 mAP@10 over the unsupervised
space on grocery) were not met by any method measured (``docs/benchmarks.md``). Before
asking for more annotations or more products, this asks whether they would help:

* ``locator``: heads (``train_heads``, default ``TrainConfig``) on 19, 38, 56 and all 75
  fit photos of ``bench/generalisation.py --part ccp``'s split (two nested draws of the
  smaller sets), the same 20 validation photos stopping every run, the same 47 photos
  scored. The crops dataset is built by the real flow once and reused.
* ``ranking``: ``fit_held_out`` (what ``train-triplets`` runs) on 6, 7 and all 8 of the
  trained products, for three fixed held-out splits of 5 products (``pick(…, 5, seed)``,
  seed 0 being the generalisation bench's); the unsupervised space of the same photos is
  the baseline in the same run. Fewer than 6 products leaves too few for Deep Ranking's
  own validation side.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
from _ccp_maps import THRESHOLD, ccp_maps, mean_iou  # noqa: E402
from _common import prefect_here, use_encoder  # noqa: E402
from generalisation import cached_grids, pick, retrieval  # noqa: E402

LOCATOR_SIZES = (19, 38, 56)  # plus every fit photo
RANKING_PRODUCTS = (6, 7, 8)
RANKING_SPLITS = (0, 1, 2)


def locator_curve(data: Path, work: Path) -> list[dict[str, object]]:
    """Scored mean IoU of heads trained on nested subsets of the fit photos."""
    from tiefvision_core.locator.runs import located_iou_score
    from tiefvision_core.locator.training import TrainConfig, train_heads

    ccp = ccp_maps(data / "ccp-dresses", work / "ccp")
    print(ccp.counts())
    fit_ids = sorted({s.image_id for s in ccp.fit})
    stop = located_iou_score(ccp.validation, ccp.geometry, THRESHOLD)
    rows = []
    for draw in (0, 1):
        order = fit_ids[:]
        random.Random(100 + draw).shuffle(order)
        sizes = [*LOCATOR_SIZES] + ([len(order)] if draw == 0 else [])
        for size in sizes:
            keep = set(order[:size])
            trained = train_heads(
                [s for s in ccp.fit if s.image_id in keep],
                ccp.validation,
                kernel=ccp.geometry.kernel,
                config=TrainConfig(),
                stop_score=stop,
            )
            row = {
                "draw": draw,
                "fit_photos": size,
                "best_epoch": trained.best_epoch,
                "validation_iou": round(mean_iou(trained, ccp.validation, ccp.geometry), 4),
                "scored_iou": round(mean_iou(trained, ccp.scored, ccp.geometry), 4),
            }
            print(
                f"draw {draw}, {size:>3} fit photos: epoch {row['best_epoch']}, validation "
                f"{row['validation_iou']:.3f}, scored {row['scored_iou']:.3f}",
                flush=True,
            )
            rows.append(row)
    return rows


def ranking_curve(data: Path, work: Path) -> list[dict[str, object]]:
    """Held-out mAP@10 of both spaces with fewer trained products, per held-out split."""
    grocery = data / "grocery-packages"
    products = pd.read_csv(grocery / "products.csv").set_index("image")["product"]
    names, maps, flipped = cached_grids(
        work / "grocery", grocery / "images", dict.fromkeys(products.index.tolist())
    )
    labels = products[names].to_numpy()
    every = sorted(set(labels))
    rows = []
    for seed in RANKING_SPLITS:
        held_out = pick(every, 5, seed)
        trained = [p for p in every if p not in held_out]
        random.Random(seed).shuffle(trained)
        for count in RANKING_PRODUCTS:
            keep = np.isin(labels, held_out + trained[:count])
            result = retrieval(maps[keep], flipped[keep], labels[keep], held_out)
            unsupervised = result["unsupervised"]["held_out_gallery"]["map_at_10"]
            supervised = result["supervised"]["held_out_gallery"]["map_at_10"]
            row = {
                "split": seed,
                "trained_products": count,
                "unsupervised_map10": unsupervised,
                "supervised_map10": supervised,
                "gain": round(float(supervised) - float(unsupervised), 4),
                "best_epoch": result["best_epoch"],
            }
            print(
                f"split {seed}, {count} trained products: unsupervised {unsupervised:.3f}, "
                f"supervised {supervised:.3f}, gain {row['gain']:+.3f}",
                flush=True,
            )
            rows.append(row)
    for count in RANKING_PRODUCTS:
        gains = [r["gain"] for r in rows if r["trained_products"] == count]
        print(f"{count} trained products: mean gain over the splits {np.mean(gains):+.3f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("locator", "ranking", "all"), default="all")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tiefvision-learning-curves-"))
    work.mkdir(parents=True, exist_ok=True)
    prefect_here(work / "prefect")
    if not use_encoder("efficientnet_lite0"):
        sys.exit(1)
    result: dict[str, object] = {"workdir": str(work)}
    if args.part in ("locator", "all"):
        print("## locator, ccp-dresses: scored mean IoU against fit photos")
        result["locator"] = locator_curve(args.data, work)
    if args.part in ("ranking", "all"):
        print("## Deep Ranking, grocery-packages: held-out mAP@10 against trained products")
        result["ranking"] = ranking_curve(args.data, work)
    print(json.dumps(result, default=float))


if __name__ == "__main__":
    main()
