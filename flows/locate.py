"""Box inference flow: every catalog photo without a box for the current locator.

plan_locate ──► locate_shard × N ──► report_locate
(incremental:    (whole-image maps at every scale → heads → positions with
 image + sha256)  P ≥ threshold averaged; none → the best positions,
                  low_confidence=true; no window at all → whole image, fallback=true)
                 (one after another, or on Dask workers: TIEFVISION_TASK_RUNNER=dask)
"""

from __future__ import annotations

import time

from prefect import unmapped

from flows._results import FLOW_RESULTS
from flows._runtime import runtime_config
from flows._scale_out import SettingsTaskRunner, gather, gpu_request
from flows._stage import stage_flow
from tasks.locator import locate_shard, plan_locate, report_locate
from tasks.progress import advance, start_progress
from tiefvision_core.locator.locate import LocateSummary
from tiefvision_core.parameters.stages import LocateParameters
from tiefvision_core.run import start_run

__all__ = ["locate"]


@stage_flow(
    LocateParameters, name="locate", task_runner=SettingsTaskRunner(max_workers=1), **FLOW_RESULTS
)
def locate(parameters: LocateParameters) -> LocateSummary:
    """Locate the product in every catalog photo that has no box for this locator yet."""
    settings, config = runtime_config(parameters)
    started = time.perf_counter()
    run = start_run(settings)  # the catalog as it is now; a parent flow's run shares it
    plan = plan_locate(run.key, config, parameters.locator, parameters.shard_size)
    version = plan.locator_version
    progress = start_progress("locate", plan.images, f"Locating products with {version}")
    advance(progress, "locate", plan.already_located)
    with gpu_request():
        futures = locate_shard.map(
            unmapped(run.key),
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
        boxes_uri=run.store.uri(plan.prefix),
    )
    report_locate(summary)
    return summary
