"""Whitening learned without labels, alone and as Deep Ranking's start, on products never
trained on (issue 30, item 1: a training signal from every catalog photo).

    python bench/whitening.py [--data ../shared/data] [--workdir /tmp/gen] [--seeds 0,1,2]

1. **The shrink is chosen on another catalog**: ``grocery-produce`` (its 50 kinds, a fixed
   sample of 1,500 photos as queries and gallery, class = relevant) scores whitenings
   learned from all its photos at each ``--shrinks`` value; the best one is used below.
   Nothing scored below steers the choice.
2. **grocery-packages**, the five products each seed holds out (``pick(products, 5,
   seed)``), their photos the queries and the gallery, in one run:
   unsupervised (the seed's space) · whitened (learned from the photos that are not held
   out; no label used) · Deep Ranking from the identity (today's ``train-triplets``) ·
   Deep Ranking from the whitening (``DeepRankingConfig(init="whitened")``).
3. **clothing-small**, class-level (every photo a query against the rest): unsupervised
   and whitened (learned from its own photos, no label), the search-vector bench's view.

Grid encodings are cached in ``--workdir`` (the same cache ``bench/produce.py`` uses).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
from clothing import encode_requests, photo_requests  # noqa: E402
from generalisation import catalog_grids, pick, retrieval  # noqa: E402


def whitened(maps: np.ndarray, fit_rows: np.ndarray, shrink: float) -> np.ndarray:
    """The unsupervised-space vectors of ``maps`` after the whitening of ``fit_rows``."""
    from tiefvision_core.similarity.unsupervised import similarity_vectors
    from tiefvision_core.similarity.whitening import fit_whitening

    weight, bias = fit_whitening(maps, fit_rows, shrink)
    positions = np.asarray(maps, np.float32).transpose(0, 2, 3, 1)  # (N, H, W, C)
    out = (positions @ weight.T + bias).transpose(0, 3, 1, 2)  # BLAS, not einsum's loop
    return similarity_vectors(out)


def main() -> None:
    from tiefvision_core.similarity.deep_ranking import DeepRankingConfig
    from tiefvision_core.similarity.retrieval import score_vectors
    from tiefvision_core.similarity.unsupervised import similarity_grid, similarity_vectors

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gen"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--shrinks", default="0.1,0.3,1,3,10,30")
    args = parser.parse_args()
    from _common import use_encoder

    use_encoder("efficientnet_lite0")
    results: dict[str, object] = {}

    _, maps, _, labels = catalog_grids(args.workdir / "produce", args.data / "grocery-produce")
    sample = np.sort(np.random.default_rng(0).choice(len(maps), 1500, replace=False))
    every = np.arange(len(maps))
    sweep = {"unsupervised": score_vectors(similarity_vectors(maps[sample]), labels[sample])}
    for shrink in (float(s) for s in args.shrinks.split(",")):
        vectors = whitened(maps, every, shrink)[sample]
        sweep[f"shrink {shrink:g}"] = score_vectors(vectors, labels[sample])
    chosen = max((k for k in sweep if k != "unsupervised"), key=lambda k: sweep[k].map_at_10)
    shrink = float(chosen.split()[1])
    line = ", ".join(f"{k} {v.map_at_10:.3f}" for k, v in sweep.items())
    print(f"grocery-produce (choosing the shrink), mAP@10: {line} → {chosen}", flush=True)
    results["produce"] = {k: v.as_dict() for k, v in sweep.items()} | {"shrink": shrink}

    _, maps, _, labels = catalog_grids(args.workdir / "grocery", args.data / "grocery-packages")
    print(f"\n{'seed':<6}{'space (held-out packages)':<36}{'P@1':>7}{'mAP@10':>8}{'gain':>8}"
          f"{'95 % interval':>18}")  # fmt: skip
    config = DeepRankingConfig()
    for seed in (int(s) for s in args.seeds.split(",")):
        held = pick(sorted(set(labels)), 5, seed)
        split = np.isin(labels, held)
        rows = np.flatnonzero(split)
        base = score_vectors(similarity_vectors(maps[rows]), labels[rows])
        white = score_vectors(whitened(maps, np.flatnonzero(~split), shrink)[rows], labels[rows])
        table = {"unsupervised": (base, None), "whitened (no labels)": (white, None)}
        for name, variant in (
            ("Deep Ranking from the identity", config),
            (
                "Deep Ranking from the whitening",
                replace(config, init="whitened", whitening_shrink=shrink),
            ),
        ):
            result = retrieval(maps, None, labels, held, config=variant)
            scores = result["supervised"]["held_out_gallery"]
            table[name] = (scores, result["gain_interval"])
        for name, (scores, interval) in table.items():
            scores = scores if isinstance(scores, dict) else scores.as_dict()
            gain = float(scores["map_at_10"]) - base.map_at_10
            span = "" if interval is None else f"[{interval[0]:+.3f}, {interval[1]:+.3f}]"
            print(f"{seed:<6}{name:<36}{scores['precision_at_1']:>7.3f}"
                  f"{scores['map_at_10']:>8.3f}{gain:>+8.3f}{span:>18}", flush=True)  # fmt: skip
        results[f"packages seed {seed}"] = {
            k: (v[0] if isinstance(v[0], dict) else v[0].as_dict()) for k, v in table.items()
        }

    from tiefvision_core.encoding.runtime import RuntimeConfig

    requests, classes = photo_requests(args.data / "clothing-small")
    runtime = RuntimeConfig(backend="auto").build()
    try:
        ids, raw = encode_requests(runtime, requests)
    finally:
        runtime.close()
    maps, labels = similarity_grid(raw), np.array([classes[i] for i in ids])
    every = np.arange(len(maps))
    clothing = {
        "unsupervised": score_vectors(similarity_vectors(maps), labels),
        "whitened (no labels)": score_vectors(whitened(maps, every, shrink), labels),
    }
    line = ", ".join(
        f"{k} P@1 {v.precision_at_1:.3f} mAP@10 {v.map_at_10:.3f}" for k, v in clothing.items()
    )
    print(f"\nclothing-small, class-level: {line}")
    results["clothing"] = {k: v.as_dict() for k, v in clothing.items()}
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
