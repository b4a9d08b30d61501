"""Quality on catalogs the project was not tuned on, each figure beside its baselines.

    python bench/generalisation.py [--part ccp|style|grocery|all] [--workdir DIR]
                                   [--data ../shared/data] [--encoder efficientnet_lite0]

Parts (issue 16, item 2):

* ``ccp`` — real street photos (``ccp-dresses``): the boxes of a fixed two thirds of the
  photos (seeded shuffle of the sorted names) are imported as annotations, the real
  ``train-locator`` and ``locate`` flows run, and the other third is scored: mean IoU,
  IoU ≥ 0.5 / ≥ 0.7, fallback share (and low-confidence share when the locator flags it),
  against the whole-photo and median-box baselines.
* ``style`` — the locator trained on the existing synthetic style only, scored on the
  ``rooms`` style it never saw (and on the old style's never-annotated half); then Deep
  Ranking on the rooms catalog, unsupervised vs supervised mAP@10 on held-out products,
  with located crops and with the true boxes.
* ``grocery`` — real photos of packaged products (``grocery-packages``, no boxes): Deep
  Ranking trained on 8 fixed products, scored on the other 5 (P@1, P@5, mAP@10).

``--workdir`` keeps the stores (ingest, annotations, crops datasets) and the encodings
between runs, so a rerun only trains, locates and scores. A table per part, then one JSON
line with every number.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]  # bench/_common, and the tree it measures
from _common import (  # noqa: E402
    encode_grids,
    every_side_copy,
    import_boxes,
    ingest_once,
    prefect_here,
    print_box_table,
    score_boxes,
    train_and_locate,
    truth_boxes,
    use_encoder,
)

PARTS = ("ccp", "style", "grocery")
_COORDS = ["left", "top", "right", "bottom"]


def pick(names: list[str], count: int, seed: int) -> list[str]:
    """A fixed choice of ``count`` of ``names``: sorted, shuffled by ``seed``, the first
    ``count``, sorted again — the same for every run and every machine."""
    ordered = sorted(set(names))
    random.Random(seed).shuffle(ordered)
    return sorted(ordered[:count])


def _box_result(evaluation: Any) -> dict[str, Any]:
    """A ``LocatorEvaluation``'s numbers, with the fallback and low-confidence shares."""
    images = max(evaluation.images, 1)
    low = getattr(evaluation, "low_confidence", None)
    return {
        **evaluation.as_dict(),
        "fallback_share": round(evaluation.fallbacks / images, 4),
        "low_confidence_share": None if low is None else round(low / images, 4),
    }


def _training(bench: Any) -> dict[str, Any]:
    print(
        f"train-locator flow {bench.train_seconds:.0f} s ({bench.run.epochs} epochs, best "
        f"{bench.run.best_epoch}); locate flow {bench.locate_seconds:.0f} s for "
        f"{bench.summary.located} photos"
    )
    return {
        "train_locator_seconds": round(bench.train_seconds, 1),
        "locate_seconds": round(bench.locate_seconds, 1),
        "epochs": bench.run.epochs,
        "best_epoch": bench.run.best_epoch,
        # the annotated photos the run held out (not the scored ones): what to choose by
        "test_split_mean_iou": bench.run.evaluation["locator"]["mean_iou"],
    }


def part_ccp(args: argparse.Namespace) -> dict[str, Any]:
    """Locator on real street photos: train on a fixed two thirds, score the rest."""
    data = args.data / "ccp-dresses"
    work = args.workdir / "ccp"
    work.mkdir(parents=True, exist_ok=True)
    store = ingest_once(work / "store", data / "images")
    boxes = pd.read_csv(data / "boxes.csv")
    train = pick(boxes["image"].tolist(), round(len(boxes) * 2 / 3), args.seed)
    train_csv = work / "train-boxes.csv"
    boxes[boxes["image"].isin(train)].to_csv(train_csv, index=False)
    import_boxes(store, train_csv)

    bench = train_and_locate(store, args.encoder, args.scales)
    truth = truth_boxes(store, boxes)
    annotated = set(truth.loc[truth["image"].isin(train), "image_id"])
    scored = set(truth["image_id"]) - annotated
    evaluation = score_boxes(store, bench.run.version, truth, scored, annotated)
    print(f"\n## ccp-dresses: locator trained on {len(train)} photos, scored on the other third")
    print_box_table(evaluation)
    every = _every_side(
        store,
        args.encoder,
        bench,
        lambda v, scored=scored: score_boxes(store, v, truth, scored, annotated),
    )
    return {"trained_on": len(train), **_box_result(evaluation), **_training(bench), **every}


def _every_side(store: Any, encoder: str, bench: Any, score: Any) -> dict[str, Any]:
    """The same heads located at every trained side (the path before sides were measured),
    scored like the measured choice: the same run's before and after."""
    from flows.locate import locate

    if bench.run.locate_sides == bench.run.trained_sides:
        return {"locate_sides": list(bench.run.locate_sides)}
    version = bench.every_side_version or every_side_copy(store, bench.run.version)
    bench.every_side_version = version
    started = time.perf_counter()
    summary = locate(store=store.url, encoder=encoder, locator=version)
    seconds = time.perf_counter() - started
    evaluation = score(version)
    print(
        f"\nthe same heads at every trained side {list(bench.run.trained_sides)} "
        f"(measured choice {list(bench.run.locate_sides)}): locate {seconds:.0f} s "
        f"for {summary.located} photos, against {bench.locate_seconds:.0f} s"
    )
    print_box_table(evaluation)
    return {
        "locate_sides": list(bench.run.locate_sides),
        "every_side": {**_box_result(evaluation), "locate_seconds": round(seconds, 1)},
    }


def _style_catalog(args: argparse.Namespace) -> Path:
    """One folder of photos, ``studio/`` (the style the project was built on) beside
    ``rooms/`` (never trained on), with one boxes.csv and products.csv for both (paths
    and product ids prefixed by the style); written once per size."""
    sizes = f"studio{args.studio_products}-rooms{args.rooms_products}x{args.views}"
    catalog = args.workdir / "style" / sizes
    if (catalog / "products.csv").is_file():
        return catalog
    from tiefvision_core.catalog.synthetic import generate_catalog

    boxes: list[pd.DataFrame] = []
    products: list[pd.DataFrame] = []
    for style, count, seed in (
        ("studio", args.studio_products, 7),  # bench/locator.py's catalog
        ("rooms", args.rooms_products, 8),  # other products, too
    ):
        part = catalog / f"generated-{style}"
        generate_catalog(part, products=count, views=args.views, seed=seed, style=style)
        (catalog / "images").mkdir(parents=True, exist_ok=True)
        os.replace(part / "images", catalog / "images" / style)
        for frame, into in (
            (pd.read_csv(part / "boxes.csv"), boxes),
            (pd.read_csv(part / "products.csv"), products),
        ):
            frame["image"] = f"{style}/" + frame["image"]
            if "product_id" in frame:
                frame["product_id"] = f"{style}-" + frame["product_id"]
            frame["style"] = style
            into.append(frame)
    pd.concat(boxes).to_csv(catalog / "boxes.csv", index=False)
    pd.concat(products).to_csv(catalog / "products.csv", index=False)
    return catalog


def cached_grids(
    work: Path, images: Path, boxes: dict[str, tuple[int, int, int, int] | None]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """:func:`encode_grids`, kept in ``work`` under a digest of the crops (and encoder)."""
    key = hashlib.sha256(
        json.dumps([os.environ["TIEFVISION_ENCODER"], sorted(boxes.items())]).encode()
    ).hexdigest()[:16]
    path = work / f"grids-{key}.npz"
    if path.is_file():
        cached = np.load(path)
        return [str(n) for n in cached["names"]], cached["maps"], cached["flipped"]
    names, maps, flipped = encode_grids(images, boxes)
    np.savez(path, names=np.array(names), maps=maps, flipped=flipped)
    return names, maps, flipped


def catalog_grids(work: Path, data: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(names, grid maps, maps of the mirrors, product ids) of the whole photos of a
    catalog folder holding ``images/`` and ``products.csv`` (``image,product``), cached in
    ``work``."""
    products = pd.read_csv(data / "products.csv").set_index("image")["product"]
    work.mkdir(parents=True, exist_ok=True)
    names, maps, flipped = cached_grids(work, data / "images", dict.fromkeys(products.index))
    return names, maps, flipped, products[names].to_numpy().astype(str)


def _supervised_vectors(net: Any, maps: np.ndarray, rows: list[int]) -> np.ndarray:
    """The trained space's vectors of ``rows`` (``space_vectors`` where the similarity code
    on disk has it, else ``embed`` — the bench runs against either)."""
    import torch

    from tiefvision_core.similarity import deep_ranking

    vectors = getattr(deep_ranking, "space_vectors", None)
    if vectors is not None:
        return np.asarray(vectors(net, maps, rows))
    with torch.no_grad():
        net.eval()
        tensor = torch.from_numpy(np.asarray(maps[rows], np.float32))
        return deep_ranking.embed(net, tensor).numpy()


def retrieval(
    maps: np.ndarray,
    flipped: np.ndarray | None,
    labels: np.ndarray,
    held_out: list[str],
    validation: np.ndarray | None = None,
    config: Any = None,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Deep Ranking trained with the ``held_out`` products left out (``fit_held_out``, the
    code ``train-triplets`` runs), then P@1 / P@5 / mAP@10 of both spaces with the held-out
    photos as queries and gallery (same product = relevant). ``validation``: the row mask
    of the products that stop training (default: ``fit_held_out``'s seeded choice);
    ``config`` (default ``DeepRankingConfig()``) and ``groups`` go to ``fit_held_out``."""
    from tiefvision_core.similarity.deep_ranking import DeepRankingConfig, fit_held_out
    from tiefvision_core.similarity.retrieval import (
        ranked_neighbours,
        retrieval_scores,
        score_vectors,
    )
    from tiefvision_core.similarity.unsupervised import similarity_vectors

    split = np.isin(labels, held_out)
    started = time.perf_counter()
    fit = fit_held_out(
        maps,
        labels,
        split,
        flipped=flipped,
        config=config or DeepRankingConfig(),
        validation=validation,
        groups=groups,
    )
    seconds = time.perf_counter() - started
    rows = [int(i) for i in np.flatnonzero(split)]
    every = list(range(len(labels)))

    def scores(vectors: np.ndarray) -> dict[str, dict[str, object]]:
        """Held-out queries against the held-out photos, and against every photo (as a
        search of the live catalog would: the trained products as distractors)."""
        among = score_vectors(vectors[rows], labels[rows])
        whole = retrieval_scores(
            ranked_neighbours(vectors, 10)[rows], labels, queries=np.array(rows)
        )
        return {"held_out_gallery": among.as_dict(), "whole_gallery": whole.as_dict()}

    supervised = scores(_supervised_vectors(fit.trained.net, maps, every))
    reported = supervised["held_out_gallery"]["map_at_10"]
    if abs(float(reported) - fit.supervised_map10) > 1e-3:  # type: ignore[arg-type]
        raise RuntimeError(
            f"held-out mAP@10 here {reported} vs fit_held_out {fit.supervised_map10}: the "
            f"bench no longer scores what training reports"
        )
    untrained = similarity_vectors(np.asarray(maps))
    return {
        "unsupervised": scores(untrained),
        "supervised": supervised,
        "gain_interval": _gain_interval(
            _supervised_vectors(fit.trained.net, maps, rows), untrained[rows], labels[rows]
        ),
        "train_seconds": round(seconds, 1),
        "epochs": len(fit.trained.history),
        "best_epoch": fit.trained.best_epoch,
        "held_out_products": sorted(held_out),
        "held_out_photos": len(rows),
    }


def _gain_interval(trained: np.ndarray, untrained: np.ndarray, labels: np.ndarray) -> list:
    """The held-out gallery's mAP@10 gain with the 95 % interval ``tiefvision evaluate``
    reports (paired per-query difference, products resampled)."""
    from tiefvision_core.similarity.retrieval import per_query, product_interval, ranked_neighbours

    ap = [per_query(ranked_neighbours(v, 10), labels).ap_at_10 for v in (trained, untrained)]
    used = per_query(ranked_neighbours(trained, 10), labels).labels
    return list(product_interval(ap[0] - ap[1], used))


def _print_retrieval(rows: dict[str, dict[str, Any]]) -> None:
    galleries = ("held_out_gallery", "whole_gallery")
    print(f"{'':<36}{'held-out gallery':^26}{'whole gallery':^26}")
    print(f"{'crops':<22}{'space':<14}" + f"{'P@1':>8}{'P@5':>8}{'mAP@10':>10}" * 2)
    for crops, result in rows.items():
        for space in ("unsupervised", "supervised"):
            line = f"{crops:<22}{space:<14}"
            for gallery in galleries:
                s = result[space][gallery]
                line += (
                    f"{s['precision_at_1']:>8.3f}{s['precision_at_5']:>8.3f}{s['map_at_10']:>10.3f}"
                )
            print(line)
        gains = [
            result["supervised"][g]["map_at_10"] - result["unsupervised"][g]["map_at_10"]
            for g in galleries
        ]
        low, high = result["gain_interval"]
        print(
            f"{'':<22}gain in mAP@10 {gains[0]:+.3f} [{low:+.3f}, {high:+.3f}] / "
            f"{gains[1]:+.3f}; training "
            f"{result['train_seconds']:.0f} s ({result['epochs']} epochs, best "
            f"{result['best_epoch']})"
        )


def part_style(args: argparse.Namespace) -> dict[str, Any]:
    """Locator trained on the studio style only, scored on the rooms style; then Deep
    Ranking on the rooms catalog with located crops, true boxes and whole photos."""
    catalog = _style_catalog(args)
    store = ingest_once(catalog / "store", catalog / "images")
    boxes = pd.read_csv(catalog / "boxes.csv")
    studio = boxes[boxes["style"] == "studio"]
    studio_products = sorted(studio["image"].str.split("/").str[1].unique())
    chosen = set(studio_products[: max(1, len(studio_products) // 2)])  # as annotated_half
    train = studio[studio["image"].str.split("/").str[1].isin(chosen)]
    train_csv = catalog / "annotated-half.csv"
    train[["image", *_COORDS]].to_csv(train_csv, index=False)
    import_boxes(store, train_csv)

    bench = train_and_locate(store, args.encoder, args.scales)
    truth = truth_boxes(store, boxes[["image", *_COORDS]])
    annotated = set(truth.loc[truth["image"].isin(train["image"]), "image_id"])
    style_of = dict(zip(truth["image_id"], truth["image"].str.split("/").str[0], strict=True))
    result: dict[str, Any] = {"trained_on": len(annotated)}
    for style, title in (
        ("rooms", "rooms style (never trained on), every photo"),
        ("studio", "studio style, the never-annotated half"),
    ):
        scored = {i for i, s in style_of.items() if s == style} - annotated
        evaluation = score_boxes(store, bench.run.version, truth, scored, annotated)
        print(f"\n## {title}: locator trained on {len(annotated)} studio photos")
        print_box_table(evaluation)
        result[f"locator_{style}"] = _box_result(evaluation)
        every = _every_side(
            store,
            args.encoder,
            bench,
            lambda v, scored=scored: score_boxes(store, v, truth, scored, annotated),
        )
        result[f"locator_{style}"].update(every)
    result.update(_training(bench))

    from tiefvision_core.catalog.boxes import read_boxes

    located = read_boxes(store, bench.run.version).set_index("image_id")
    rooms = truth[truth["image"].str.startswith("rooms/")]
    crops: dict[str, dict[str, tuple[int, int, int, int] | None]] = {
        "located crops": {
            image: tuple(int(v) for v in located.loc[image_id, _COORDS])  # type: ignore[misc]
            for image, image_id in zip(rooms["image"], rooms["image_id"], strict=True)
        },
        "true boxes": {
            image: tuple(int(v) for v in row)  # type: ignore[misc]
            for image, row in zip(rooms["image"], rooms[_COORDS].to_numpy(), strict=True)
        },
        "whole photos": dict.fromkeys(rooms["image"]),
    }
    products = pd.read_csv(catalog / "products.csv").set_index("image")["product_id"]
    rooms_products = sorted(set(products[rooms["image"]]))
    held_out = pick(rooms_products, round(len(rooms_products) * 0.25), args.seed)
    table = {}
    for name, chosen_boxes in crops.items():
        names, maps, flipped = cached_grids(catalog, catalog / "images", chosen_boxes)
        table[name] = retrieval(maps, flipped, products[names].to_numpy(), held_out)
        if name != "whole photos":  # mirrors from the map instead of a mirror pass
            table[f"{name}, mirrored maps"] = retrieval(
                maps, None, products[names].to_numpy(), held_out
            )
    print(
        f"\n## Deep Ranking on the rooms catalog: {len(rooms_products) - len(held_out)} "
        f"products trained on, {len(held_out)} held out "
        f"({table['true boxes']['held_out_photos']} photos: the queries and the gallery)"
    )
    _print_retrieval(table)
    ratio = table["located crops"]["supervised"]["held_out_gallery"]["map_at_10"] / max(
        table["true boxes"]["supervised"]["held_out_gallery"]["map_at_10"], 1e-9
    )
    print(f"located / true-box supervised mAP@10: {ratio:.1%} (target ≥ 85 %)")
    result["retrieval_rooms"] = table
    result["located_over_true_map10"] = round(ratio, 4)
    return result


def part_grocery(args: argparse.Namespace) -> dict[str, Any]:
    """Deep Ranking on real packaged-product photos (whole photos, no boxes): trained on 8
    fixed products, scored on the other 5."""
    data = args.data / "grocery-packages"
    work = args.workdir / "grocery"
    work.mkdir(parents=True, exist_ok=True)
    products = pd.read_csv(data / "products.csv").set_index("image")["product"]
    held_out = pick(sorted(set(products)), 5, args.seed)
    names, maps, flipped = cached_grids(
        work, data / "images", dict.fromkeys(products.index.tolist())
    )
    result = retrieval(maps, flipped, products[names].to_numpy(), held_out)
    # What train-triplets sees when no mirror pass ran: each map mirrored along its width.
    map_mirrors = retrieval(maps, None, products[names].to_numpy(), held_out)
    print(
        f"\n## grocery-packages: Deep Ranking on {len(set(products)) - 5} products, scored on "
        f"5 ({result['held_out_photos']} photos: {', '.join(held_out)})"
    )
    _print_retrieval({"whole photos": result, "mirrored maps": map_mirrors})
    return {**result, "mirrored_maps": map_mirrors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=(*PARTS, "all"), default="all")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scales",
        type=lambda text: tuple(int(side) for side in text.split(",")),
        default=None,
        help="the locator's whole-image input sides, comma-separated (default: the flow's)",
    )
    parser.add_argument("--studio-products", type=int, default=60)
    parser.add_argument("--rooms-products", type=int, default=50)
    parser.add_argument("--views", type=int, default=4)
    args = parser.parse_args()
    args.workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="tiefvision-gen-"))).resolve()
    args.data = args.data.resolve()
    prefect_here(args.workdir / "prefect")
    if not use_encoder(args.encoder):
        return
    runners = {"ccp": part_ccp, "style": part_style, "grocery": part_grocery}
    chosen = PARTS if args.part == "all" else (args.part,)
    results = {part: runners[part](args) for part in chosen if part in runners}
    print(
        json.dumps(
            {
                "encoder": args.encoder,
                "workdir": str(args.workdir),
                "scales": args.scales,
                **results,
            }
        )
    )


if __name__ == "__main__":
    main()
