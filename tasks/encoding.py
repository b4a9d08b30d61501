"""Prefect tasks around :mod:`tiefvision_core.encoding.encode`.

The model is built once per process (:func:`get_runtime`) from a small, hashable
:class:`RuntimeConfig`; tasks exchange the plan (a work-list key and shard slices), never
tensors or tables of the catalog.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from functools import lru_cache

import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from tasks.policies import EPHEMERAL, RETRYING
from tasks.progress import advance
from tiefvision_core import encoding
from tiefvision_core.encoding.encode import EncodeSummary
from tiefvision_core.encoding.runtime import (
    EncodingRuntime,
    RuntimeConfig,
    resolve_device,
    shared_runtime,
)
from tiefvision_core.encoding.shards import EncodePlan, ShardResult, ShardSpec, VectorDType
from tiefvision_core.run import RunKey, run_context

__all__ = [
    "encode_shard",
    "for_this_process",
    "get_runtime",
    "plan_encoding",
    "prestart",
    "report_encoding",
]


@lru_cache(maxsize=2)
def get_runtime(config: RuntimeConfig) -> EncodingRuntime:
    """One model per process and configuration: building and tuning it takes seconds."""
    return shared_runtime(for_this_process(config))


def prestart(config: RuntimeConfig) -> None:
    """Build the runtime the flow's tasks will get from :func:`get_runtime` (same process,
    same configuration) and boot its encoding processes in the background: a command
    calls this before waiting for Prefect's server, so both starts overlap."""
    get_runtime(config).start_processes()


def for_this_process(config: RuntimeConfig) -> RuntimeConfig:
    """The flow's configuration, fitted to a Dask worker when this process is one.

    Why: the engine already runs one worker process per slot of the machine, so a runtime
    there must not start its own pool of encoding processes on top (workers × cores
    processes fighting for the cores) and must use only the threads the worker was given:
    ``OMP_NUM_THREADS``, which Dask's nanny sets (1 unless the cluster says otherwise). On
    the CPU it decodes in the encoding thread, like each process of the local pool does; on
    a GPU it keeps its decoding processes where the worker may start them.
    """
    distributed = sys.modules.get("distributed")  # not imported: certainly not a Dask worker
    if distributed is None:
        return config
    try:
        distributed.get_worker()
    except ValueError:
        return config
    threads = int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads())
    cuda = resolve_device(config.device).type == "cuda"
    return replace(
        config, threads=max(1, threads), cpu_processes=0, workers=config.workers if cuda else 0
    )


@task(name="plan-encoding", **RETRYING)
def plan_encoding(
    run: RunKey,
    config: RuntimeConfig,
    kind: str,
    shard_size: int,
    flips: bool,
    dtype: VectorDType,
) -> EncodePlan:
    context = run_context(run)
    plan = encoding.shards.plan_encoding(
        context.store,
        get_runtime(config).encoder,
        kind=kind,
        shard_size=shard_size,
        flips=flips,
        dtype=dtype,
        catalog=context.catalog,
    )
    get_run_logger().info(
        "%d usable images, %d already encoded, %d to encode in %d shards under %s",
        plan.images,
        plan.already_encoded,
        plan.to_encode,
        len(plan.shards),
        plan.prefix,
    )
    return plan


@task(name="encode-shard", task_run_name="encode-shard-{spec.shard_id:.8}", **RETRYING)
def encode_shard(
    run: RunKey,
    config: RuntimeConfig,
    plan: EncodePlan,
    spec: ShardSpec,
    flips: bool,
    dtype: VectorDType,
    progress_id: str | None = None,
) -> ShardResult:
    """Decode, encode and write one shard (skipped when an earlier run wrote it)."""
    result = encoding.encode.encode_shard(
        run_context(run).store,
        get_runtime(config),
        plan,
        spec,
        flips=flips,
        dtype=dtype,
        on_batch=lambda done: advance(progress_id, "encode", done),
    )
    if result.rejected:
        get_run_logger().warning(
            "%s: %d images rejected %s", result.key, result.rejected, dict(result.reject_reasons)
        )
    return result


@task(name="report-encoding", **EPHEMERAL)
def report_encoding(summary: EncodeSummary) -> None:
    """Log the run and publish its summary table as an artifact."""
    rows = [
        {"measure": name, "value": str(summary.as_dict()[name])}
        for name in (
            "images",
            "already_encoded",
            "encoded",
            "rejected",
            "images_per_s",
            "seconds",
            "device",
            "batch_size",
            "channels_last",
            "encoder_version",
            "shards_written",
            "shards_skipped",
            "shards_uri",
        )
    ]
    rows += [
        {"measure": f"rejected: {k}", "value": str(v)} for k, v in summary.reject_reasons.items()
    ]
    create_table_artifact(
        key="encode-summary", table=rows, description=f"Encoding with {summary.encoder_version}"
    )
    get_run_logger().info(
        "Encoded %d images (%d rejected) at %.1f images/s on %s into %s",
        summary.encoded,
        summary.rejected,
        summary.images_per_s,
        summary.device,
        summary.shards_uri,
    )
