"""The locator with the backbone's last stage trained, against heads over frozen features.

    python bench/locator_finetune.py [--data ../shared/data] [--workdir DIR]
                                     [--rates 1e-4,3e-4] [--epochs 20] [--patience 6]

Issue 16 asked what could lift ccp-dresses' located IoU (0.65) towards 0.75 once the box
rule was ruled out (``docs/benchmarks.md``, "Where ccp's IoU is lost"). This measures the
last candidate: fine-tuning Lite0's last stage for the locator. The split is
``bench/generalisation.py --part ccp``'s: the same 95 photos trained on (a fifth of them
kept for early stopping, as ``train-locator`` does), the other 47 scored. Every photo's box
is imported so that the real ``crops`` flow builds all 142 photos' maps the same way
(sides 320/448/576/768); the scored photos' boxes are used for scoring only.

Lite0's frozen part — everything before its last stage — runs once per (photo, side) and is
cached in ``--workdir`` (192 channels per position, 7× smaller than the final maps), so an
epoch costs seconds on a CPU. Trained: the last MBConv block, the 1×1 head convolution and
its batch norm's scale and shift (running statistics frozen, as in
``bench/deep_ranking_finetune.py``), jointly with the locator heads, by the locator's own
loss, mirrored batches and early stopping on the validation photos' located IoU. Rows:

* ``frozen``: today's heads (``train_heads``, default ``TrainConfig``), the baseline;
* ``from frozen, lr r``: those heads and the last stage trained on together (heads at 3e-4);
* ``fresh heads, lr r``: new heads (1e-3) and the last stage trained from the start.

Before training the tail reproduces the stored maps (the largest difference is printed), so
the first configuration's epoch 0 *is* the baseline.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
from _ccp_maps import THRESHOLD, ccp_maps, mean_iou  # noqa: E402
from _common import prefect_here  # noqa: E402
from _last_stage import LastStage, frozen_part_of  # noqa: E402


def frozen_part(store: Any, samples: Sequence[Any], cache: Path) -> dict[tuple[str, int], Any]:
    """(image_id, side) → Lite0's output before its last stage for that whole-image input,
    decoded and resized as the encoding runtime does (the same JPEG draft side)."""
    if cache.is_file():
        return torch.load(cache)
    from PIL import Image

    from tiefvision_core.catalog.imaging import decode_image
    from tiefvision_core.catalog.manifest import read_manifest
    from tiefvision_core.config import load_settings
    from tiefvision_core.encoders import get_encoder
    from tiefvision_core.encoding.requests import CropRequest
    from tiefvision_core.storage.urls import read_source

    encoder = get_encoder("efficientnet_lite0")
    rows = read_manifest(store).to_pandas().set_index("image_id")
    max_pixels = load_settings().max_image_pixels
    out = {}
    with torch.no_grad():
        for s in samples:
            row = rows.loc[s.image_id]
            width, height = s.image_size
            request = CropRequest(
                s.image_id, row["sha256"], row["source_uri"], width, height, whole_side=s.side
            )
            data = read_source(request.uri, sha256=request.sha256)
            image = decode_image(data, max_pixels=max_pixels, min_side=request.decode_min_side(224))
            size = request.whole_size(encoder.geometry.stride)
            resized = np.asarray(image.resize(size, Image.Resampling.BILINEAR), np.uint8)
            pixels = torch.from_numpy(resized.copy()).permute(2, 0, 1)
            out[(s.image_id, s.side)] = frozen_part_of(encoder, pixels[None])[0]
    torch.save(out, cache)
    return out


class TunedLocator(nn.Module):
    """The last stage, then the heads: called like ``LocatorHeads`` on the frozen part."""

    def __init__(self, stage: LastStage, heads: nn.Module) -> None:
        super().__init__()
        self.stage, self.heads = stage, heads

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.stage(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--rates", default="1e-4,3e-4")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=6)
    args = parser.parse_args()

    from tiefvision_core.locator.model import LocatorHeads
    from tiefvision_core.locator.runs import located_iou_score
    from tiefvision_core.locator.training import (
        LocatorLoss,
        TrainConfig,
        TrainedLocator,
        channel_stats,
        shuffled_batches,
        train_heads,
    )

    work = args.workdir or Path(tempfile.mkdtemp(prefix="tiefvision-locator-finetune-"))
    prefect_here(work / "prefect")
    ccp = ccp_maps(args.data / "ccp-dresses", work)
    store, geometry, samples = ccp.store, ccp.geometry, ccp.samples
    fit, validation, scored = ccp.fit, ccp.validation, ccp.scored
    frozen = frozen_part(store, samples, work / "frozen-part.pt")
    config = TrainConfig()
    print(ccp.counts())

    def frozen_maps(group):
        return [replace(s, maps=frozen[(s.image_id, s.side)]) for s in group]

    def tuned_iou(model: nn.Module, group, scaler) -> float:
        return mean_iou(TrainedLocator(model, scaler), group, geometry)

    started = time.perf_counter()
    base = train_heads(
        fit,
        validation,
        kernel=geometry.kernel,
        config=config,
        stop_score=located_iou_score(validation, geometry, THRESHOLD),
    )
    scaler = base.scaler
    seconds = time.perf_counter() - started
    print(
        f"frozen: epoch {base.best_epoch}, "
        f"validation {mean_iou(base, validation, geometry):.3f}, "
        f"scored {mean_iou(base, scored, geometry):.3f} ({seconds:.0f} s)"
    )
    stage = LastStage().eval()
    with torch.no_grad():
        first = samples[0]
        gap = stage(frozen[(first.image_id, first.side)][None].float())[0] - first.maps.float()
    print(f"largest |last stage(frozen part) − stored map|: {float(gap.abs().max()):.4f}")

    fit_f, validation_f, scored_f = frozen_maps(fit), frozen_maps(validation), frozen_maps(scored)
    n_fg = sum(int((s.labels == 1).sum()) for s in fit)
    n_bg = sum(int((s.labels == 0).sum()) for s in fit)
    loss = LocatorLoss(scaler, n_bg / n_fg, config.regression_weight)
    rates = args.rates.split(",")
    runs = [(f"from frozen, lr {r}", float(r), True) for r in rates]
    runs.append((f"fresh heads, lr {rates[0]}", float(rates[0]), False))
    for label, rate, from_frozen in runs:
        torch.manual_seed(config.seed)
        rng = random.Random(config.seed)
        if from_frozen:
            heads, heads_rate = copy.deepcopy(base.heads), 3e-4
        else:
            heads = LocatorHeads(int(fit[0].maps.shape[0]), geometry.kernel)
            heads.set_channel_stats(*channel_stats(fit))
            heads_rate = config.learning_rate
        model = TunedLocator(LastStage(), heads)
        optimiser = torch.optim.AdamW(
            [
                {"params": model.stage.parameters(), "lr": rate},
                {"params": model.heads.parameters(), "lr": heads_rate},
            ],
            weight_decay=config.weight_decay,
        )
        model.eval()
        best = (tuned_iou(model, validation_f, scaler), 0, copy.deepcopy(model.state_dict()))
        print(f"{label}: epoch 0 validation {best[0]:.3f}")
        for epoch in range(1, args.epochs + 1):
            started = time.perf_counter()
            model.train()
            for batch in shuffled_batches(fit_f, config.batch_size, rng):
                optimiser.zero_grad(set_to_none=True)
                value, _, _ = loss(model, batch, "cpu", mirror=rng.random() < 0.5)
                value.backward()
                optimiser.step()
            model.eval()
            score = tuned_iou(model, validation_f, scaler)
            print(
                f"  epoch {epoch}: validation {score:.3f} ({time.perf_counter() - started:.0f} s)"
            )
            if score > best[0]:
                best = (score, epoch, copy.deepcopy(model.state_dict()))
            elif epoch - best[1] >= args.patience:
                break
        model.load_state_dict(best[2])
        print(
            f"{label}: epoch chosen on validation {best[1]} ({best[0]:.3f}), "
            f"scored {tuned_iou(model, scored_f, scaler):.3f}"
        )


if __name__ == "__main__":
    main()
