"""Crops flow: the locator's training data from the annotated photos.

export_box_snapshot ──► plan_crops ──► encode_crop_part × N ──► finish_crops ──► report_crops
(frozen annotations)    (split by image)  (whole-image maps       (labelled windows,
                                           at every scale)          dataset.json last)
"""

from __future__ import annotations

from prefect import unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from flows._results import FLOW_RESULTS
from flows._runtime import runtime_config
from flows._stage import stage_flow
from tasks.locator import (
    build_crop_part,
    export_box_snapshot,
    finish_crops,
    plan_crops,
    report_crops,
)
from tasks.progress import start_progress
from tiefvision_core.locator.crops import CropConfig, CropDataset
from tiefvision_core.parameters.stages import CropsParameters

__all__ = ["crops"]


@stage_flow(
    CropsParameters, name="crops", task_runner=ThreadPoolTaskRunner(max_workers=1), **FLOW_RESULTS
)
def crops(parameters: CropsParameters) -> CropDataset:
    """Build the crops dataset of the current box annotations (resumes a killed run).

    The annotations database URL is a secret: the run's parameters show it masked.
    """
    settings, config = runtime_config(parameters)
    crop_config = CropConfig(
        scales=tuple(parameters.scales),
        test_fraction=parameters.test_fraction,
        seed=parameters.seed,
        min_images=parameters.min_images,
        fit_to_boxes=parameters.fit_scales,
    )
    snapshot = export_box_snapshot(settings.store_url, parameters.database)
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
