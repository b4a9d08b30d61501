"""Ingest flow: list the source, inspect chunks in parallel, publish the manifest.

plan_ingest ──► inspect_chunk × N (threads: hashing and decoding release the GIL)
            └──────────────► publish_manifest ──► follow_annotations ──► report_ingest
                                                  (a renamed photo's box and triplets
                                                   move to its new id)
"""

from __future__ import annotations

from prefect import flow, unmapped
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from flows._results import FLOW_RESULTS
from tasks.ingest import (
    follow_annotations,
    inspect_chunk,
    plan_ingest,
    publish_manifest,
    report_ingest,
)
from tiefvision_core.catalog.ingest import IngestSummary
from tiefvision_core.config import load_settings

__all__ = ["ingest"]


# Prefect types task_runner TaskRunner[PrefectFuture[Any]], invariant: no concrete runner fits.
@flow(name="ingest", task_runner=ThreadPoolTaskRunner(max_workers=4), **FLOW_RESULTS)  # type: ignore[arg-type]
def ingest(
    images: str,
    store: str | None = None,
    metadata: str | None = None,
    chunk_size: int = 256,
    verify_hashes: bool = False,
    follow_symlinks: bool | None = None,
) -> IngestSummary:
    """Bring a folder or S3 prefix of photos into the catalog manifest, incrementally.

    Args:
        images: the source: a local folder or ``s3://bucket/prefix``.
        store: where the pipeline writes (default: ``TIEFVISION_STORE_URL``, else local).
        metadata: optional CSV/Parquet with ``product_id``, ``category``, … per image.
        chunk_size: images per parallel task; smaller = finer resume, more overhead.
        verify_hashes: re-hash every image even when size and mtime/ETag are unchanged.
        follow_symlinks: read files that symbolic links lead to outside the source folder
            (default: ``TIEFVISION_FOLLOW_SYMLINKS``, off); links inside it are always read.
    """
    settings = load_settings(store_url=store, follow_symlinks=follow_symlinks)
    plan = plan_ingest(
        images,
        settings.store_url,
        chunk_size,
        settings.workers,
        verify_hashes,
        settings.max_image_pixels,
        settings.max_image_bytes,
        settings.follow_symlinks,
    )
    # quote(): the plan holds one entry per image; Prefect need not walk it looking for futures.
    staged = inspect_chunk.map(
        unmapped(images),
        unmapped(settings.store_url),
        [quote(chunk) for chunk in plan.chunks],
        unmapped(verify_hashes),
        unmapped(settings.max_image_pixels),
        unmapped(settings.max_image_bytes),
    )
    # Prefect unwraps quote() before the call, which its typing of task calls cannot express.
    summary = publish_manifest(settings.store_url, quote(plan), staged.result(), metadata)  # type: ignore[call-overload]
    follow_annotations(settings.store_url, summary)
    report_ingest(summary)
    return summary
