"""Box inference flow: every catalog photo without a box for the current locator.

plan_locate ──► locate_shard × N ──► report_locate
(incremental:    (whole-image maps at every scale → heads → positions with
 image + sha256)  P ≥ threshold averaged; none → the best positions,
                  low_confidence=true; no window at all → whole image, fallback=true)
                 (one after another, or on Dask workers: TIEFVISION_TASK_RUNNER=dask)
"""

from __future__ import annotations

import time
from typing import Literal

from prefect import flow, unmapped

from flows._results import FLOW_RESULTS
from flows._runtime import runtime_config
from flows._scale_out import SettingsTaskRunner, gather, gpu_request
from tasks.locator import locate_shard, plan_locate, report_locate
from tasks.progress import advance, start_progress
from tasks.stores import get_store
from tiefvision_core.locator.locate import LocateSummary

__all__ = ["locate"]


@flow(name="locate", task_runner=SettingsTaskRunner(max_workers=1), **FLOW_RESULTS)
def locate(
    store: str | None = None,
    encoder: str | None = None,
    weights: str = "default",
    device: Literal["auto", "cpu", "cuda"] | None = None,
    batch_size: int | None = None,
    locator: str | None = None,
    shard_size: int = 256,
) -> LocateSummary:
    """Locate the product in every catalog photo that has no box for this locator yet.

    Args:
        store: storage root (default: ``TIEFVISION_STORE_URL``, else the local store).
        encoder: encoder name; must be the one the locator was trained with.
        weights: encoder weights: "default" (pretrained, offline), "none", or a .pth path.
        device: auto, cpu or cuda.
        batch_size: images per forward pass; empty = measured per device.
        locator: locator version; empty = the current one.
        shard_size: photos per output part (the unit of resume).
    """
    settings, config = runtime_config(store, encoder, weights, device, batch_size)
    started = time.perf_counter()
    plan = plan_locate(settings.store_url, config, locator, shard_size)
    version = plan.locator_version
    progress = start_progress("locate", plan.images, f"Locating products with {version}")
    advance(progress, "locate", plan.already_located)
    with gpu_request():
        futures = locate_shard.map(
            unmapped(settings.store_url),
            unmapped(config),
            unmapped(version),
            unmapped(plan),
            list(plan.shards),
            unmapped(progress),
        )
    parts = gather(futures, plan.shards, progress, "locate")
    summary = LocateSummary.of_parts(
        plan,
        parts,
        seconds=time.perf_counter() - started,
        boxes_uri=get_store(settings.store_url).uri(plan.prefix),
    )
    report_locate(summary)
    return summary
