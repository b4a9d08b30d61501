"""Encoding flow: CNN feature maps of every catalog image not yet encoded, as Parquet shards.

plan_encoding ──► encode_shard × N (one after another: each already fills the device;
              │                   in parallel on Dask workers with TIEFVISION_TASK_RUNNER=dask)
              └──────────────────► summary ──► report_encoding
"""

from __future__ import annotations

import time
from typing import Literal

from prefect import flow, unmapped

from flows._results import FLOW_RESULTS
from flows._runtime import runtime_config
from flows._scale_out import SettingsTaskRunner, gather, gpu_request
from tasks.encoding import encode_shard, get_runtime, plan_encoding, report_encoding
from tasks.progress import advance, start_progress
from tiefvision_core.encoding.encode import EncodeSummary, summarise_encoding
from tiefvision_core.run import start_run

__all__ = ["encode"]


@flow(name="encode", task_runner=SettingsTaskRunner(max_workers=1), **FLOW_RESULTS)
def encode(
    store: str | None = None,
    encoder: str | None = None,
    weights: str = "default",
    device: Literal["auto", "cpu", "cuda"] | None = None,
    batch_size: int | None = None,
    shard_size: int = 256,
    flips: bool = False,
    dtype: Literal["float16", "float32"] = "float16",
    kind: Literal["grid", "box"] = "grid",
    compile: bool = False,
    backend: Literal["auto", "torch", "onnxruntime"] | None = None,
) -> EncodeSummary:
    """Encode catalog images that have no encoding for (sha256, encoder version, box) yet.

    Args:
        store: storage root (default: ``TIEFVISION_STORE_URL``, else the local store).
        encoder: encoder name (default ``TIEFVISION_ENCODER``: efficientnet_lite0).
        weights: "default" (pretrained, offline), "none" (random, on purpose) or a .pth path.
        device: auto, cpu or cuda.
        batch_size: images per forward pass; empty = measured per device.
        shard_size: images per Parquet shard (the unit of resume).
        flips: also store each crop's horizontal mirror (a free positive for training).
        dtype: float16 (half the storage) or float32 vectors.
        kind: which crop to encode on the canonical grid: "grid" = the whole image, "box" =
            the current locator's box (the whole image where there is none).
        compile: torch.compile the model (worth it for long GPU runs).
        backend: where the CPU forward pass runs: auto (the faster of PyTorch and ONNX
            Runtime, measured once per machine), torch or onnxruntime; default
            ``TIEFVISION_BACKEND``.
    """
    settings, config = runtime_config(store, encoder, weights, device, batch_size, compile, backend)
    started = time.perf_counter()
    run = start_run(settings)  # the catalog as it is now; a parent flow's run shares it
    plan = plan_encoding(run.key, config, kind, shard_size, flips, dtype)
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
