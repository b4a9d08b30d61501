"""Deep Ranking with the backbone's last stage trained, against the adopted projection.

    python bench/deep_ranking_finetune.py [--data ../shared/data] [--workdir DIR]
                                          [--rates 1e-4,3e-5] [--epochs 12] [--produce]

Issue 16 item 4 asked to measure fine-tuning the last stage of the backbone on the triplets
(the original Deep Ranking trains the network). The split is ``bench/generalisation.py
--part grocery``'s: 8 products trained on (a quarter of them kept for choosing the epoch, as
``fit_held_out`` does), the other 5 scored. Lite0's frozen part — everything before its
last stage — runs once per photo and its mirror and is cached in ``--workdir``, so an epoch
costs seconds on a CPU. Trained: the last MBConv block, the 1×1 head convolution and its
batch norm's scale and shift (running statistics frozen); the output is pooled to the
similarity grid and compared by mean cosine, as the index does; batch-hard negatives,
hinge margin 0.1, Adam. Before training the network *is* the unsupervised space (the
first printed score equals it). Prints per epoch the validation and held-out mAP@10, then
the epoch the validation products choose.

``--produce`` (issue 30, item 2: does fine-tuning pay once there are tens of classes?) adds
the 3,676 ``grocery-produce`` photos, 50 kinds, to the training photos; the validation and
scored products stay the packaged ones above.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
from _last_stage import LastStage, frozen_part_of  # noqa: E402
from generalisation import pick  # noqa: E402


def frozen_part(names: list[str], images: Path, cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(photos, mirrors): Lite0's output before its last stage for each 224-pixel photo."""
    if cache.is_file():
        return torch.load(cache)
    from PIL import Image, ImageOps

    from tiefvision_core.encoders import get_encoder
    from tiefvision_core.encoding.pixels import crop_pixels

    encoder = get_encoder("efficientnet_lite0")
    plain, mirrored = [], []
    with torch.no_grad():
        for start in range(0, len(names), 32):
            pixels = torch.stack(
                [
                    crop_pixels(
                        ImageOps.exif_transpose(Image.open(images / n)).convert("RGB"), None, 224
                    )
                    for n in names[start : start + 32]
                ]
            )
            for batch, out in ((pixels, plain), (pixels.flip(3), mirrored)):
                out.append(frozen_part_of(encoder, batch))
    result = (torch.cat(plain), torch.cat(mirrored))
    torch.save(result, cache)
    return result


class GridStage(LastStage):
    """The trainable last stage, then the similarity grid's unit vectors (as the index)."""

    def __init__(self) -> None:
        super().__init__()
        from tiefvision_core.similarity.unsupervised import SIMILARITY_GRID

        self.cells = SIMILARITY_GRID

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = functional.adaptive_avg_pool2d(super().forward(x), self.cells)
        y = y / y.norm(dim=1, keepdim=True).clamp_min(1e-6) / self.cells
        return y.permute(0, 2, 3, 1).reshape(len(y), -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--rates", default="1e-4,3e-5")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--produce", action="store_true", help="train on grocery-produce too")
    args = parser.parse_args()
    torch.manual_seed(0)
    random.seed(0)

    from tiefvision_core.similarity.deep_ranking import hardest_negatives, hinge_loss
    from tiefvision_core.similarity.retrieval import score_vectors
    from tiefvision_core.similarity.triplets import split_products

    data = args.data / "grocery-packages"
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tiefvision-finetune-"))
    work.mkdir(parents=True, exist_ok=True)
    products = pd.read_csv(data / "products.csv").set_index("image")["product"]
    names = sorted(products.index)
    labels = products[names].to_numpy()
    photos, mirrors = frozen_part(names, data / "images", work / "frozen-part.pt")
    scored = np.isin(labels, pick(sorted(set(products)), 5, 0))
    validation = np.isin(labels, sorted(split_products(sorted(set(labels[~scored])), 0.25, 0)))
    fit_rows = np.flatnonzero(~scored & ~validation)
    if args.produce:
        extra = pd.read_csv(args.data / "grocery-produce" / "products.csv")
        extra = extra.set_index("image")["product"]
        extra_names = sorted(extra.index)
        more, more_mirrors = frozen_part(
            extra_names, args.data / "grocery-produce" / "images", work / "frozen-produce.pt"
        )
        photos, mirrors = torch.cat([photos, more]), torch.cat([mirrors, more_mirrors])
        labels = np.concatenate([labels, "produce:" + extra[extra_names].to_numpy()])
        scored = np.concatenate([scored, np.zeros(len(extra_names), bool)])
        validation = np.concatenate([validation, np.zeros(len(extra_names), bool)])
        fit_rows = np.flatnonzero(~scored & ~validation)
    by_product: dict[str, list[int]] = {}
    for row in fit_rows:
        by_product.setdefault(labels[row], []).append(int(row))

    def score(net: GridStage, mask: np.ndarray) -> float:
        rows = np.flatnonzero(mask)
        net.eval()
        with torch.no_grad():
            vectors = torch.cat(
                [net(photos[rows[i : i + 128]].float()) for i in range(0, len(rows), 128)]
            )
        return float(score_vectors(vectors.numpy(), labels[rows]).map_at_10)

    for rate in (float(r) for r in args.rates.split(",")):
        net = GridStage()
        print(f"lr {rate}: before training held-out mAP@10 {score(net, scored):.4f}")
        optimiser = torch.optim.Adam(net.parameters(), lr=rate)
        best = (-1.0, 0.0, 0)
        for epoch in range(1, args.epochs + 1):
            started = time.perf_counter()
            net.train()
            order = np.random.RandomState(epoch).permutation(fit_rows)
            for start in range(0, len(order), 32):
                anchors = order[start : start + 32]
                positives = [
                    random.choice([r for r in by_product[labels[a]] if r != a] or [int(a)])
                    for a in anchors
                ]
                mirror = (torch.rand(len(anchors)) < 0.5)[:, None, None, None]
                a = net(torch.where(mirror, mirrors[anchors], photos[anchors]).float())
                p = net(photos[positives].float())
                other = torch.from_numpy(labels[anchors][:, None] != labels[anchors][None, :])
                sim_pos = (a * p).sum(1)
                hardest = hardest_negatives(a @ a.T, other, sim_pos, semi_hard=False)
                loss = hinge_loss(sim_pos, hardest, 0.1)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            val, held = score(net, validation), score(net, scored)
            print(
                f"  epoch {epoch}: validation {val:.4f} held-out {held:.4f} "
                f"({time.perf_counter() - started:.0f} s)"
            )
            if val > best[0]:
                best = (val, held, epoch)
        print(f"lr {rate}: epoch chosen on validation {best[2]}, held-out mAP@10 {best[1]:.4f}")


if __name__ == "__main__":
    main()
