"""Prefect tasks around :mod:`tiefvision_core.catalog.ingest`: retries, logging, artifacts.

Caching and result persistence are off (``EPHEMERAL``): resuming is done by the core's
staged chunks, which are keyed by the exact input set, so Prefect never has to hash a plan
or hold results.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from tasks.policies import EPHEMERAL, RETRYING
from tasks.stores import get_source, get_store
from tiefvision_core.annotations.repository import existing_annotations
from tiefvision_core.catalog import ingest
from tiefvision_core.catalog.ingest import IngestChunk, IngestPlan, IngestSummary
from tiefvision_core.config import load_settings
from tiefvision_core.storage.urls import DEFAULT_MAX_BYTES

__all__ = [
    "follow_annotations",
    "inspect_chunk",
    "plan_ingest",
    "publish_manifest",
    "report_ingest",
]

_SHOWN_SKIPS = 20


@task(name="plan-ingest", **RETRYING)
def plan_ingest(
    source_url: str,
    store_url: str,
    chunk_size: int,
    workers: int,
    verify_hashes: bool,
    max_pixels: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
    follow_symlinks: bool = False,
) -> IngestPlan:
    plan = ingest.plan_ingest(
        get_source(source_url),
        get_store(store_url),
        chunk_size=chunk_size,
        workers=workers,
        verify_hashes=verify_hashes,
        max_pixels=max_pixels,
        max_bytes=max_bytes,
        follow_symlinks=follow_symlinks,
    )
    logger = get_run_logger()
    logger.info(
        "Listed %d objects in %s: %d chunks, %d no longer present, %d refused unread, %d skipped",
        plan.listed,
        plan.source_uri,
        len(plan.chunks),
        len(plan.removed),
        len(plan.refused),
        len(plan.skipped),
    )
    if plan.skipped:
        shown = ", ".join(f"{key} ({reason})" for key, reason in plan.skipped[:_SHOWN_SKIPS])
        more = len(plan.skipped) - _SHOWN_SKIPS
        logger.info("Skipped: %s%s", shown, f" and {more} more" if more > 0 else "")
    return plan


@task(name="inspect-chunk", task_run_name="inspect-chunk-{chunk.chunk_id:.8}", **RETRYING)
def inspect_chunk(
    source_url: str,
    store_url: str,
    chunk: IngestChunk,
    verify_hashes: bool,
    max_pixels: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> str:
    """Hash and decode-check one chunk; returns the key of its staged Parquet file."""
    return ingest.stage_chunk(
        get_source(source_url),
        get_store(store_url),
        chunk,
        verify_hashes=verify_hashes,
        max_pixels=max_pixels,
        max_bytes=max_bytes,
    )


@task(name="publish-manifest", **RETRYING)
def publish_manifest(
    store_url: str, plan: IngestPlan, staged_keys: list[str], metadata_path: str | None
) -> IngestSummary:
    """Assemble the new manifest, publish it as a version, then drop the staging files."""
    return ingest.finish_ingest(get_store(store_url), plan, staged_keys, metadata_path)


@task(name="follow-annotations", **RETRYING)
def follow_annotations(store_url: str, summary: IngestSummary) -> dict[str, int]:
    """Annotations follow the photos' bytes: those of a renamed photo move to its new id,
    and rows drawn on unrecorded bytes get them. Nothing to do (and no database created)
    where no annotations database exists yet."""
    annotations = existing_annotations(load_settings(store_url=store_url))
    if annotations is None:
        return {}
    with annotations:
        done = annotations.follow_ingest(
            get_store(store_url), summary.version, summary.previous_version
        )
    get_run_logger().info(
        "annotations: %d boxes and %d triplets moved to renamed photos, bytes recorded for %d",
        done["boxes"],
        done["triplets"],
        done["recorded"],
    )
    return done


@task(name="report-ingest", **EPHEMERAL)
def report_ingest(summary: IngestSummary) -> None:
    """Log the counts and publish them as a table artifact for the Prefect UI."""
    rows = [
        {"measure": name, "value": summary.as_dict()[name]}
        for name in (
            "images",
            "listed",
            "skipped",
            "new",
            "changed",
            "unchanged",
            "removed",
            "rejected",
            "rejects_total",
            "bytes_total",
            "version",
            "manifest_uri",
            "rejects_uri",
        )
    ]
    rows += [{"measure": f"rejected: {k}", "value": v} for k, v in summary.reject_reasons.items()]
    rows += [{"measure": f"skipped: {k}", "value": v} for k, v in summary.skipped_reasons.items()]
    create_table_artifact(
        key="ingest-summary", table=rows, description=f"Catalog ingest {summary.version}"
    )
    get_run_logger().info(
        "Ingest %s: %d images usable of %d listed, %d new, %d changed, %d removed, "
        "%d rejected, %d skipped",
        summary.version,
        summary.images,
        summary.listed,
        summary.new,
        summary.changed,
        summary.removed,
        summary.rejected,
        summary.skipped,
    )
