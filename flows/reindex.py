"""Nightly incremental reindex: the catalog's changes, through every stage, into every
live index — one run at a time per store.

lock ──► ingest ──► plan ──► locate ──► encode(kind="box") ──► update index × space
(store   (new,      (locator? (current    (only crops without an        (reused vectors for
 lock)    changed,   spaces?)  locator,    encoding: new and changed     unchanged rows, new
          removed)            new photos)  photos)                       ones projected; update
                                                                         or rebuild, published)
                                                                     ──► gc (retention)
                                                                     ──► report (artifact)

Each new index version passes the regression gate (``tiefvision_core.index.gate``) before
it goes live; a refused space keeps its live version, the other spaces are still brought up
to date, gc is skipped (the refused version stays on storage for inspection whatever the
retention), the summary and each comparison are published, and the run fails.

Cost follows the change: ingest decodes new bytes only, locate and encode skip what they
already did, and each index reuses its live version's vectors (see
``tiefvision_core.index.updates``).
"""

from __future__ import annotations

import time
from typing import Literal, TypedDict

from prefect import flow

from flows._results import FLOW_RESULTS
from flows._runtime import runtime_config
from flows.encode import encode
from flows.ingest import ingest
from flows.locate import locate
from tasks.evaluate import report_gate
from tasks.gc import collect_garbage_task
from tasks.reindex import plan_reindex, report_reindex, update_space_index
from tasks.store_lock import store_lock
from tiefvision_core.config import Device
from tiefvision_core.index.gate import GatePolicy
from tiefvision_core.index.updates import UpdatePolicy
from tiefvision_core.pipeline.reindex import ReindexRefused, ReindexSummary, StageClock
from tiefvision_core.run import start_run
from tiefvision_core.vector_index.kinds import IndexKindChoice
from tiefvision_core.vector_index.pointer import RegressionRefused

__all__ = ["reindex"]


class _RuntimeArgs(TypedDict):
    """The arguments this run's locate and encode flows share."""

    store: str
    encoder: str
    weights: str
    device: Device
    batch_size: int | None
    shard_size: int


@flow(name="reindex", **FLOW_RESULTS)
def reindex(
    images: str,
    store: str | None = None,
    metadata: str | None = None,
    encoder: str | None = None,
    weights: str = "default",
    device: Literal["auto", "cpu", "cuda"] | None = None,
    batch_size: int | None = None,
    shard_size: int = 256,
    index_kind: IndexKindChoice | None = None,
    keep: int = 3,
    max_churn: float = 0.2,
    max_growth: float = 2.0,
    lock_timeout: float = 600.0,
    lock_ttl: float = 120.0,
    verify_hashes: bool = False,
    retention: int | None = None,
    gc_grace_hours: float = 6.0,
    tolerance: float | None = None,
    allow_regression: bool = False,
) -> ReindexSummary:
    """Bring the catalog, its boxes, encodings and every live index up to the source.

    Args:
        images: the source: a local folder or ``s3://bucket/prefix``.
        store: storage root (default: ``TIEFVISION_STORE_URL``, else the local store).
        metadata: optional CSV/Parquet with ``product_id``, ``category``, … per image.
        encoder: encoder name (default ``TIEFVISION_ENCODER``: efficientnet_lite0).
        weights: encoder weights: "default" (pretrained, offline), "none", or a .pth path.
        device: auto, cpu or cuda.
        batch_size: images per forward pass; empty = measured per device.
        shard_size: photos per locate part and encoding shard (the unit of resume).
        index_kind: force an index kind; empty = keep each live index's configuration
            (auto for a first build).
        keep: index versions kept on storage (the live one included).
        max_churn: rebuild an ANN index when more than this share of the rows its training
            saw were added, changed or removed since.
        max_growth: rebuild an ANN index when the catalog grew or shrank by this factor
            since its training.
        lock_timeout: seconds to wait for a reindex or rebuild-index already running on
            this store.
        lock_ttl: seconds without a heartbeat after which a holder counts as dead.
        verify_hashes: re-hash every image, even when size and mtime/ETag are unchanged.
        retention: versions kept by the closing gc step per kind (index, model, manifest),
            the live one included (default ``TIEFVISION_RETENTION``: 3); encodings and
            boxes of removed or re-shot photos go at once.
        gc_grace_hours: leftovers (temporary files, work lists) younger than this are kept.
        tolerance: mAP@10 a new index version may lose against the live one and still go
            live (default ``TIEFVISION_REGRESSION_TOLERANCE``: 0.02).
        allow_regression: let a larger drop go live too (the comparison is still published).
    """
    started = time.perf_counter()
    settings, config = runtime_config(store, encoder, weights, device, batch_size)
    policy = UpdatePolicy(max_churn=max_churn, max_growth=max_growth)
    gate = GatePolicy(
        settings.regression_tolerance if tolerance is None else tolerance,
        allow_regression,
        rule=settings.regression_rule,
    )
    url, clock = settings.store_url, StageClock()
    runtime: _RuntimeArgs = {
        "store": url,
        "encoder": settings.encoder,
        "weights": weights,
        "device": settings.device,
        "batch_size": settings.batch_size,
        "shard_size": shard_size,
    }
    with store_lock(url, lock_timeout, lock_ttl, job="reindex") as lock:
        with clock("ingest"):
            catalog = ingest(
                images=images, store=url, metadata=metadata, verify_hashes=verify_hashes
            )
        plan = plan_reindex(url)
        located = None
        if plan.locator:
            with clock("locate"):
                located = locate(**runtime)
        with clock("encode"):
            encoded = encode(**runtime, kind="box")  # no mirror pass: the index never reads one
        run = start_run(settings).key  # the catalog this run ingested, as encode saw it
        updates, gates, refused = [], [], []
        for space in plan.spaces:
            lock.check()  # never switch a pointer once another run took the lock
            with clock(f"index {space}"):
                try:
                    update = update_space_index(run, config, space, index_kind, policy, keep, gate)
                except RegressionRefused as refusal:
                    refused.append(refusal)
                    gates.append(refusal.comparison)
                    continue
            updates.append(update)
            if update.gate is not None:
                gates.append(update.gate)
        freed = 0
        if not refused:
            lock.check()  # the lock is still ours: nothing another run needs is deleted
            with clock("gc"):
                freed = collect_garbage_task(
                    url, retention or settings.retention, gc_grace_hours * 3600
                ).bytes
    summary = ReindexSummary(
        store_url=url,
        manifest_version=catalog.version,
        images=catalog.images,
        new=catalog.new,
        changed=catalog.changed,
        removed=catalog.removed,
        rejected=catalog.rejected,
        locator_version=plan.locator,
        located=located.located if located else 0,
        encoded=encoded.encoded,
        encode_rejected=encoded.rejected,
        indexes=tuple(updates),
        stages=clock.seconds,
        lock_waited_s=round(lock.waited_s, 3),
        garbage_bytes=freed,
        seconds=round(time.perf_counter() - started, 3),
        gates=tuple(gates),
        gc_skipped=(
            "a new index version was refused by the regression gate: it stays on storage"
            if refused
            else None
        ),
    )
    report_reindex(summary)
    for comparison in gates:
        report_gate(comparison)
    if refused:
        raise ReindexRefused("; ".join(map(str, refused)), refused[0].comparison, summary)
    return summary
