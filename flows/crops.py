"""Crops flow: the locator's training data from the annotated photos.

export_box_snapshot ──► plan_crops ──► encode_crop_part × N ──► finish_crops ──► report_crops
(frozen annotations)    (split by image)  (whole-image maps       (labelled windows,
                                           at every scale)          dataset.json last)
"""

from __future__ import annotations

from typing import Literal

from prefect import flow, unmapped
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import SecretStr

from flows._results import FLOW_RESULTS
from flows._runtime import runtime_config
from tasks.locator import (
    build_crop_part,
    export_box_snapshot,
    finish_crops,
    plan_crops,
    report_crops,
)
from tasks.progress import start_progress
from tiefvision_core.locator.crops import DEFAULT_SCALES, CropConfig, CropDataset

__all__ = ["crops"]


# Prefect types task_runner TaskRunner[PrefectFuture[Any]], invariant: no concrete runner fits.
@flow(name="crops", task_runner=ThreadPoolTaskRunner(max_workers=1), **FLOW_RESULTS)  # type: ignore[arg-type]
def crops(
    store: str | None = None,
    encoder: str | None = None,
    weights: str = "default",
    device: Literal["auto", "cpu", "cuda"] | None = None,
    batch_size: int | None = None,
    scales: tuple[int, ...] = DEFAULT_SCALES,
    test_fraction: float = 0.2,
    seed: int = 0,
    min_images: int = 20,
    fit_scales: bool = True,
    database: SecretStr | None = None,
) -> CropDataset:
    """Build the crops dataset of the current box annotations (resumes a killed run).

    Args:
        store: storage root (default: ``TIEFVISION_STORE_URL``, else the local store).
        encoder: encoder name (default ``TIEFVISION_ENCODER``: efficientnet_lite0).
        weights: "default" (pretrained, offline), "none" (random, on purpose) or a .pth path.
        device: auto, cpu or cuda.
        batch_size: images per forward pass; empty = measured per device.
        scales: longer side, in pixels, of each whole-image input the windows are cut from.
        fit_scales: add one larger side when the annotated products are narrow (a window
            would not fit inside them at any of ``scales``); see the README, "Locating the product".
        test_fraction: share of annotated photos held out (split by photo, stratified).
        seed: split seed.
        min_images: refuse to build a dataset from fewer annotated photos.
        database: the annotations database URL (default: ``TIEFVISION_DATABASE_URL``, else
            SQLite under a local store), a secret: the run's parameters show it masked.
    """
    settings, config = runtime_config(store, encoder, weights, device, batch_size)
    crop_config = CropConfig(
        scales=tuple(scales),
        test_fraction=test_fraction,
        seed=seed,
        min_images=min_images,
        fit_to_boxes=fit_scales,
    )
    snapshot = export_box_snapshot(settings.store_url, database)
    plan = plan_crops(settings.store_url, config, snapshot, crop_config)
    progress = start_progress("crops", plan.images, "Encoding annotated photos for the locator")
    build_crop_part.map(
        unmapped(settings.store_url),
        unmapped(config),
        unmapped(plan),
        list(plan.parts),
        unmapped(plan.scales),
        unmapped(progress),
    ).result()
    dataset = finish_crops(settings.store_url, config, plan, crop_config)
    report_crops(dataset)
    return dataset
