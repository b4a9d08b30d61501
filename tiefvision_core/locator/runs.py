"""Train → evaluate on held-out photos → save: one locator run, the Python API behind the
``train-locator`` flow (which runs the same steps as Prefect tasks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from tiefvision_core.catalog.imaging import DEFAULT_MAX_PIXELS, decode_image
from tiefvision_core.encoding.runtime import resolve_device
from tiefvision_core.errors import ImageRejected, StorageNotFound
from tiefvision_core.locator.crops import CropDataset, MapSample, load_samples
from tiefvision_core.locator.evaluation import (
    LocatorEvaluation,
    draw_box_grid,
    evaluate_boxes,
    iou,
    iou_histogram_png,
    png_bytes,
)
from tiefvision_core.locator.model import (
    LocatedBox,
    LocatorHeads,
    TargetScaler,
    WindowGeometry,
    locate_in_maps,
)
from tiefvision_core.locator.model_files import LocatorModel, save_locator
from tiefvision_core.locator.sides import SideChoice, choose_sides
from tiefvision_core.locator.training import (
    EpochMetrics,
    TrainConfig,
    TrainedLocator,
    train_heads,
    validation_split,
)
from tiefvision_core.storage.layout import locator_prefix
from tiefvision_core.storage.stores import Store
from tiefvision_core.storage.urls import DEFAULT_MAX_BYTES, read_source

__all__ = ["LocatorRun", "evaluate_samples", "fit_locator", "located_iou_score"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocatorRun:
    version: str
    dataset_id: str
    best_epoch: int
    epochs: int
    stopped_early: bool
    evaluation: dict[str, object]
    evaluation_table: list[dict[str, object]]
    metrics: list[dict[str, float]]
    model_uri: str
    grid_uri: str
    histogram_uri: str
    #: The sides ``locate`` uses (measured on the validation photos) and all trained ones.
    locate_sides: tuple[int, ...] = ()
    trained_sides: tuple[int, ...] = ()
    #: Held-out mean IoU when locating with every trained side (the measured choice's
    #: figure is ``evaluation``'s).
    all_sides_iou: float | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _geometry(dataset: CropDataset) -> WindowGeometry:
    return WindowGeometry.from_dict(dataset.window)


def evaluate_samples(
    trained: TrainedLocator,
    samples: Sequence[MapSample],
    geometry: WindowGeometry,
    threshold: float,
) -> dict[str, LocatedBox]:
    """Boxes for the photos of ``samples`` (all their scales together)."""
    by_image: dict[str, list[MapSample]] = {}
    for sample in samples:
        by_image.setdefault(sample.image_id, []).append(sample)
    return {
        image_id: locate_in_maps(
            trained.heads,
            [(s.maps.float(), s.scale_xy) for s in group],
            geometry=geometry,
            scaler=trained.scaler,
            image_size=group[0].image_size,
            threshold=threshold,
        )
        for image_id, group in by_image.items()
    }


def located_iou_score(
    samples: Sequence[MapSample], geometry: WindowGeometry, threshold: float
) -> Callable[[LocatorHeads, TargetScaler], float]:
    """Early stopping's score when it watches boxes (``TrainConfig.stop_on="iou"``): the
    mean IoU of the located boxes of ``samples``' photos (all scales together, the default
    box rule) with their true boxes."""

    def score(heads: LocatorHeads, scaler: TargetScaler) -> float:
        located = evaluate_samples(TrainedLocator(heads, scaler), samples, geometry, threshold)
        return mean_iou(located, samples)

    return score


def mean_iou(located: dict[str, LocatedBox], samples: Sequence[MapSample]) -> float:
    """Mean IoU of the ``located`` box of every photo of ``samples`` with its true box (0
    without a photo)."""
    by_image = {s.image_id: s for s in samples}
    ids = sorted(by_image)
    if not ids:
        return 0.0
    boxes = np.array([located[i].box for i in ids], np.float64)
    return float(iou(boxes, np.array([by_image[i].box for i in ids], np.float64)).mean())


def located_at(
    trained: TrainedLocator,
    samples: Sequence[MapSample],
    sides: Sequence[int],
    geometry: WindowGeometry,
    threshold: float,
) -> dict[str, LocatedBox]:
    """Boxes of every photo of ``samples`` located with the maps of ``sides`` alone. A
    photo with no map at those sides (too small for a window there) gets what ``locate``
    gives it: the whole photo, as a fallback — so every subset is scored on every photo."""
    located = evaluate_samples(
        trained, [s for s in samples if s.side in sides], geometry, threshold
    )
    for sample in samples:
        if sample.image_id not in located:
            whole = (0, 0, *sample.image_size)
            located[sample.image_id] = LocatedBox(whole, 0.0, 0, fallback=True)
    return located


def measured_sides(
    trained: TrainedLocator,
    validation: Sequence[MapSample],
    geometry: WindowGeometry,
    threshold: float,
    scales: Sequence[int],
    config: TrainConfig,
) -> SideChoice:
    """The sides ``locate`` will use (:mod:`tiefvision_core.locator.sides`): measured on the
    validation photos, which chose the epoch but are never the scored ones.
    ``config.side_tolerance`` None keeps every trained side."""
    photos = len({s.image_id for s in validation})
    if config.side_tolerance is None:
        return choose_sides(scales, lambda _: 0.0, validation_photos=0)

    def score(sides: tuple[int, ...]) -> float:
        return mean_iou(located_at(trained, validation, sides, geometry, threshold), validation)

    return choose_sides(scales, score, validation_photos=photos, tolerance=config.side_tolerance)


def _truth(samples: Sequence[MapSample]) -> pd.DataFrame:
    seen = {s.image_id: s for s in samples}
    return pd.DataFrame(
        [
            {
                "image_id": s.image_id,
                **dict(zip(("left", "top", "right", "bottom"), s.box, strict=True)),
                "width": s.image_size[0],
                "height": s.image_size[1],
            }
            for s in seen.values()
        ]
    )


def _grid_png(
    photos: dict[str, tuple[str, str]],
    evaluation: LocatorEvaluation,
    located,
    truth,
    max_bytes: int,
    max_pixels: int,
):
    """The worst-located held-out photos with both boxes; ``photos``: (uri, sha256) by id,
    read as ingest recorded them — one changed or replaced since is left out."""
    worst_first = evaluation.per_image.sort_values("iou").head(24)
    items = []
    boxes = truth.set_index("image_id")
    for image_id, overlap in zip(worst_first["image_id"], worst_first["iou"], strict=True):
        uri, sha256 = photos[image_id]
        try:
            data = read_source(uri, sha256=sha256, max_bytes=max_bytes)
            image = decode_image(data, max_pixels=max_pixels)
        except (ImageRejected, StorageNotFound) as error:
            log.warning("held-out picture without %s: %s", image_id, error)
            continue
        true_box = boxes.loc[image_id, ["left", "top", "right", "bottom"]].tolist()
        items.append((image, true_box, located[image_id].box, overlap))
    return png_bytes(draw_box_grid(items))


def fit_locator(
    store: Store,
    dataset: CropDataset,
    *,
    config: TrainConfig | None = None,
    threshold: float = 0.8,
    device: str = "auto",
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    publish: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[LocatorModel, LocatorRun]:
    """Train on the dataset's train split (early stopping on a validation share of it,
    ``config.validation_fraction``), score the test photos — which neither trained nor
    chose the epoch — against their true boxes and both baselines, save model and
    pictures (photos read as ingest recorded them, at most ``max_bytes`` and ``max_pixels``
    each: the settings' limits, as ingest applied them)."""
    config = config or TrainConfig()
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold {threshold}: choose a probability in (0, 1)")
    samples = load_samples(store, dataset)
    train, validation = validation_split(
        [s for s in samples if s.split == "train"],
        fraction=config.validation_fraction,
        seed=config.seed,
    )
    test = [s for s in samples if s.split == "test"]
    geometry = _geometry(dataset)
    trained = train_heads(
        train,
        validation,
        kernel=geometry.kernel,
        config=config,
        device=resolve_device(device),
        on_epoch=on_epoch,
        stop_score=(
            located_iou_score(validation, geometry, threshold) if config.stop_on == "iou" else None
        ),
    )
    trained.heads.to(torch.device("cpu"))
    sides = measured_sides(trained, validation, geometry, threshold, dataset.scales, config)
    located = located_at(trained, test, sides.sides, geometry, threshold)
    all_sides_iou = round(mean_iou(evaluate_samples(trained, test, geometry, threshold), test), 4)
    predicted = pd.DataFrame(
        [
            {
                "image_id": image_id,
                **dict(zip(("left", "top", "right", "bottom"), box.box, strict=True)),
                "fallback": box.fallback,
                "low_confidence": box.low_confidence,
            }
            for image_id, box in located.items()
        ]
    )
    truth = _truth(test)
    evaluation = evaluate_boxes(predicted, truth, _truth(train + validation))
    work = store.read_parquet(f"{dataset.prefix}_work.parquet", ["image_id", "uri", "sha256"])
    photos = dict(
        zip(
            work["image_id"].to_pylist(),
            zip(work["uri"].to_pylist(), work["sha256"].to_pylist(), strict=True),
            strict=True,
        )
    )
    files = {
        "heldout-boxes.png": _grid_png(photos, evaluation, located, truth, max_bytes, max_pixels),
        "iou-histogram.png": iou_histogram_png(evaluation),
    }
    metadata = {
        "encoder": dataset.encoder,
        "encoder_version": dataset.encoder_version,
        "crops_dataset": dataset.dataset_id,
        "annotations": {"snapshot": dataset.snapshot_key, "digest": dataset.snapshot_digest},
        "images": dataset.images,
        "validation_images": len({s.image_id for s in validation}),
        "windows": dataset.windows,
        "hyper_parameters": asdict(config),
        "positive_weight": trained.positive_weight,
        "best_epoch": trained.best_epoch,
        "stopped_early": trained.stopped_early,
        "metrics": trained.metrics(),
        "evaluation": evaluation.as_dict(),
        "evaluation_all_sides": all_sides_iou,
        "side_choice": sides.as_dict(),
    }
    model = save_locator(
        store,
        trained.heads,
        trained.scaler,
        geometry=geometry,
        scales=dataset.scales,
        locate_scales=sides.sides,
        threshold=threshold,
        metadata=metadata,
        files=files,
        publish=publish,
    )
    prefix = locator_prefix(model.version)
    run = LocatorRun(
        version=model.version,
        dataset_id=dataset.dataset_id,
        best_epoch=trained.best_epoch,
        epochs=len(trained.history),
        stopped_early=trained.stopped_early,
        evaluation=evaluation.as_dict(),
        evaluation_table=evaluation.table(),
        metrics=trained.metrics(),
        model_uri=store.uri(prefix),
        grid_uri=store.uri(prefix + "heldout-boxes.png"),
        histogram_uri=store.uri(prefix + "iou-histogram.png"),
        locate_sides=sides.sides,
        trained_sides=tuple(dataset.scales),
        all_sides_iou=all_sides_iou,
    )
    return model, run
