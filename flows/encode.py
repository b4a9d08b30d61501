"""Encoding flow: CNN feature maps of every catalog image not yet encoded, as Parquet shards.

plan_encoding ──► encode_shard × N (one after another: each already fills the device;
              │                   in parallel on Dask workers with TIEFVISION_TASK_RUNNER=dask)
              └──────────────────► summary ──► report_encoding
"""

from __future__ import annotations

import time

from prefect import unmapped

from flows._results import FLOW_RESULTS
from flows._runtime import runtime_config
from flows._scale_out import SettingsTaskRunner, gather, gpu_request
from flows._stage import stage_flow
from tasks.encoding import encode_shard, get_runtime, plan_encoding, report_encoding
from tasks.progress import advance, start_progress
from tiefvision_core.encoding.encode import EncodeSummary, summarise_encoding
from tiefvision_core.parameters.stages import EncodeParameters
from tiefvision_core.run import start_run

__all__ = ["encode"]


@stage_flow(
    EncodeParameters, name="encode", task_runner=SettingsTaskRunner(max_workers=1), **FLOW_RESULTS
)
def encode(parameters: EncodeParameters) -> EncodeSummary:
    """Encode catalog images that have no encoding for (sha256, encoder version, box) yet."""
    settings, config = runtime_config(parameters)
    kind, flips, dtype = parameters.kind, parameters.flips, parameters.dtype
    started = time.perf_counter()
    run = start_run(settings)  # the catalog as it is now; a parent flow's run shares it
    plan = plan_encoding(run.key, config, kind, parameters.shard_size, flips, dtype)
    progress = start_progress("encode", plan.images, f"Encoding with {config.encoder}")
    advance(progress, "encode", plan.already_encoded)
    with gpu_request():
        futures = encode_shard.map(
            unmapped(run.key),
            unmapped(config),
            unmapped(plan),
            list(plan.shards),
            unmapped(flips),
            unmapped(dtype),
            unmapped(progress),
        )
    results = gather(futures, plan.shards, progress, "encode")
    summary = summarise_encoding(
        run.store,
        get_runtime(config),
        plan,
        results,
        time.perf_counter() - started,
    )
    report_encoding(summary)
    return summary
