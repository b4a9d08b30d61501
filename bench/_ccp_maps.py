"""ccp-dresses as the locator's maps, split as ``bench/generalisation.py --part ccp`` splits it.

Why shared: the benches that train locator heads outside the ``train-locator`` flow
(``bench/locator_finetune.py``, ``bench/learning_curves.py``) must train and score on the
very photos the generalisation bench does, or their figures cannot sit beside its baseline.
Every photo's box is imported so that the real ``crops`` flow builds all 142 photos' maps
(sides 320/448/576/768); the scored photos' boxes are used for scoring only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import import_boxes, ingest_once
from generalisation import pick

__all__ = ["THRESHOLD", "CcpMaps", "ccp_maps", "mean_iou"]

THRESHOLD = 0.8  # the default box rule's P(object)


@dataclass
class CcpMaps:
    """The crops dataset's samples in the bench's three groups."""

    store: Any
    dataset: Any  # CropDataset
    geometry: Any  # WindowGeometry
    samples: list[Any]  # MapSample, every photo and side
    fit: list[Any]  # the trained two thirds less the validation fifth
    validation: list[Any]  # what early stopping (and any choice) watches
    scored: list[Any]  # the other third: reported, never chosen on

    def counts(self) -> str:
        def photos(group: Sequence[Any]) -> int:
            return len({s.image_id for s in group})

        return (
            f"sides {self.dataset.scales}: {photos(self.fit)} photos fit, "
            f"{photos(self.validation)} validation, {photos(self.scored)} scored"
        )


def ccp_maps(data: Path, work: Path) -> CcpMaps:
    """Ingest ``data`` (the ccp-dresses folder) into ``work`` once, build its crops
    dataset with the real flow (reused on a rerun) and split its samples as
    ``train-locator`` would split the bench's trained two thirds (default ``TrainConfig``:
    a fifth kept for validation). The caller points Prefect's home first (``prefect_here``).
    """
    from flows.crops import crops
    from tiefvision_core.catalog.manifest import image_id_for
    from tiefvision_core.locator.crops import load_samples
    from tiefvision_core.locator.model import WindowGeometry
    from tiefvision_core.locator.training import TrainConfig, validation_split

    work.mkdir(parents=True, exist_ok=True)
    store = ingest_once(work / "store", data / "images")
    import_boxes(store, data / "boxes.csv")
    dataset = crops(store=store.url, encoder="efficientnet_lite0")
    samples = load_samples(store, dataset)
    names = pd.read_csv(data / "boxes.csv")["image"].tolist()
    trained = {image_id_for(n) for n in pick(names, round(len(names) * 2 / 3), 0)}
    config = TrainConfig()
    fit, validation = validation_split(
        [s for s in samples if s.image_id in trained],
        fraction=config.validation_fraction,
        seed=config.seed,
    )
    scored = [s for s in samples if s.image_id not in trained]
    geometry = WindowGeometry.from_dict(dataset.window)
    return CcpMaps(store, dataset, geometry, samples, fit, validation, scored)


def mean_iou(trained: Any, group: Sequence[Any], geometry: Any) -> float:
    """Mean IoU of the default box rule's boxes for ``group``'s photos (all sides together)
    with their true boxes; ``trained``: a ``TrainedLocator``."""
    from tiefvision_core.locator.evaluation import iou
    from tiefvision_core.locator.runs import evaluate_samples

    by_image = {s.image_id: s for s in group}
    ids = sorted(by_image)
    located = evaluate_samples(trained, group, geometry, THRESHOLD)
    boxes = np.array([located[i].box for i in ids], np.float64)
    return float(iou(boxes, np.array([by_image[i].box for i in ids], np.float64)).mean())
