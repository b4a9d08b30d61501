"""Prefect tasks of garbage collection: the store's lock and one collection. Thin: what is
garbage is decided by ``tiefvision_core.pipeline.gc``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from tasks.policies import RETRYING
from tasks.stores import get_store
from tiefvision_core.annotations.repository import existing_annotations
from tiefvision_core.config import load_settings
from tiefvision_core.pipeline.gc import GcReport, Retention, collect_garbage
from tiefvision_core.pipeline.reindex import LOCK_NAME
from tiefvision_core.storage.lock import LockHolder, StoreLock

__all__ = ["collect_garbage_task", "gc_lock"]


@contextmanager
def gc_lock(store_url: str, timeout_s: float, ttl_s: float) -> Iterator[StoreLock]:
    """Hold the store's reindex lock: nothing is deleted under a running reindex or
    rebuild, and neither starts while a collection deletes."""
    logger = get_run_logger()
    label = f"gc flow run {flow_run.get_name() or '?'} ({flow_run.get_id() or 'no id'})"
    lock = StoreLock(get_store(store_url), LOCK_NAME, label=label, ttl_s=ttl_s)

    def waiting(holder: LockHolder) -> None:
        logger.warning(
            "a reindex or rebuild is running: %s; waiting up to %.0f s",
            holder.describe(time.time()),
            timeout_s,
        )

    with lock.hold(timeout_s, waiting):
        yield lock


def _markdown(report: GcReport) -> str:
    verb = "would free" if report.dry_run else "freed"
    title = f"# Garbage collection — {verb} {report.bytes:,} bytes"
    lines = [title, "", "| what | objects | bytes |", "|---|---|---|"]
    lines += [f"| {k} | {v['objects']} | {v['bytes']:,} |" for k, v in report.totals.items()]
    return "\n".join(lines)


@task(name="collect-garbage", **RETRYING)
def collect_garbage_task(
    store_url: str, retention: int, grace_s: float, dry_run: bool = False
) -> GcReport:
    """One collection (the caller holds the store's lock), the annotations database
    included when there is one; totals logged and saved as an artifact. A retry after a
    transient error starts again from what is left."""
    annotations = existing_annotations(load_settings(store_url=store_url))
    try:
        report = collect_garbage(
            get_store(store_url),
            Retention(versions=retention, grace_s=grace_s),
            dry_run=dry_run,
            annotations=annotations,
        )
    finally:
        if annotations is not None:
            annotations.close()
    get_run_logger().info(
        "gc%s: %d objects, %d bytes (%s) in %.1f s",
        " (dry run)" if dry_run else "",
        len(report.items),
        report.bytes,
        ", ".join(f"{k} {v['objects']}" for k, v in report.totals.items()) or "nothing",
        report.seconds,
    )
    create_markdown_artifact(key="gc-summary", markdown=_markdown(report))
    return report
