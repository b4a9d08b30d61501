"""Encode a whole catalog: plan → shards → summary. The Python API behind the encode flow.

The flow (``flows/encode.py``) runs the same three steps as Prefect tasks; this module runs
them in one process for scripts and tests that do not want an orchestrator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

from tiefvision_core.encoding.requests import EncodedBatch
from tiefvision_core.encoding.runtime import EncodingRuntime
from tiefvision_core.encoding.shards import (
    EncodePlan,
    ShardResult,
    ShardSpec,
    VectorDType,
    build_shard,
    load_requests,
    plan_encoding,
)
from tiefvision_core.storage.stores import Store

__all__ = ["EncodeSummary", "encode_catalog", "encode_shard", "idle_summary", "summarise_encoding"]

BatchCallback = Callable[[int], None]  # images finished in the last batch


@dataclass(frozen=True)
class EncodeSummary:
    store_url: str
    encoder: str
    encoder_version: str
    device: str
    batch_size: int
    channels_last: bool
    images: int
    already_encoded: int
    encoded: int
    rejected: int
    shards_written: int
    shards_skipped: int
    seconds: float
    images_per_s: float
    shards_uri: str
    reject_reasons: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def encode_shard(
    store: Store,
    runtime: EncodingRuntime,
    plan: EncodePlan,
    spec: ShardSpec,
    *,
    flips: bool = False,
    dtype: VectorDType = "float16",
    on_batch: BatchCallback | None = None,
) -> ShardResult:
    """Encode one shard unless it exists; write it in one atomic put."""
    key = plan.shard_key(spec)
    if store.exists(key):
        if on_batch:
            on_batch(spec.size)
        return ShardResult(key, 0, 0, 0.0, skipped=True)
    plan_key = plan.plan_key
    assert plan_key is not None  # None only in a plan without shards, so never beside a spec
    started = time.perf_counter()

    def batches() -> Iterator[EncodedBatch]:
        for batch in runtime.stream(load_requests(store, plan_key, spec), flips=flips):
            if on_batch:
                on_batch(len(batch.rejects) + int((~batch.flipped).sum()))
            yield batch

    table, encoded, rejected, reasons = build_shard(runtime.encoder, batches(), dtype=dtype)
    store.write_parquet(key, table, plain_columns=("vector",))
    return ShardResult(
        key,
        encoded,
        rejected,
        time.perf_counter() - started,
        reject_reasons=tuple(sorted(reasons.items())),
    )


def summarise_encoding(
    store: Store,
    runtime: EncodingRuntime,
    plan: EncodePlan,
    results: Sequence[ShardResult],
    seconds: float,
) -> EncodeSummary:
    reasons: dict[str, int] = {}
    for result in results:
        for reason, count in result.reject_reasons:
            reasons[reason] = reasons.get(reason, 0) + count
    encoded = sum(r.encoded for r in results)
    busy = sum(r.seconds for r in results)  # model set-up and planning excluded
    return EncodeSummary(
        store_url=store.uri(),
        encoder=runtime.encoder.name,
        encoder_version=runtime.encoder.version,
        device=str(runtime.device),
        batch_size=runtime.batch_size,
        channels_last=runtime.channels_last,
        images=plan.images,
        already_encoded=plan.already_encoded,
        encoded=encoded,
        rejected=sum(r.rejected for r in results),
        shards_written=sum(not r.skipped for r in results),
        shards_skipped=sum(r.skipped for r in results),
        seconds=round(seconds, 3),
        images_per_s=round(encoded / busy, 2) if busy > 0 else 0.0,
        shards_uri=store.uri(plan.prefix),
        reject_reasons=reasons,
    )


def idle_summary(
    store: Store,
    runtime: EncodingRuntime,
    *,
    kind: str = "grid",
    shard_size: int = 256,
    flips: bool = False,
    dtype: VectorDType = "float16",
) -> EncodeSummary | None:
    """The summary of an encoding run with nothing to encode, or ``None`` when there is work.

    Why: a nightly ``tiefvision encode`` usually finds nothing new, and answering that from
    the plan alone spares the command the orchestrator's start (seconds) for no work.
    """
    started = time.perf_counter()
    plan = plan_encoding(
        store, runtime.encoder, kind=kind, shard_size=shard_size, flips=flips, dtype=dtype
    )
    if plan.shards:
        return None
    return summarise_encoding(store, runtime, plan, [], time.perf_counter() - started)


def encode_catalog(
    store: Store,
    runtime: EncodingRuntime,
    *,
    kind: str = "grid",
    shard_size: int = 256,
    flips: bool = False,
    dtype: VectorDType = "float16",
    on_batch: BatchCallback | None = None,
) -> EncodeSummary:
    """Encode every manifest image that has no encoding for this encoder version yet."""
    started = time.perf_counter()
    plan = plan_encoding(
        store, runtime.encoder, kind=kind, shard_size=shard_size, flips=flips, dtype=dtype
    )
    results = [
        encode_shard(store, runtime, plan, spec, flips=flips, dtype=dtype, on_batch=on_batch)
        for spec in plan.shards
    ]
    return summarise_encoding(store, runtime, plan, results, time.perf_counter() - started)
