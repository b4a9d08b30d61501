"""Ingest flow: list the source, inspect chunks in parallel, publish the manifest.

plan_ingest ──► inspect_chunk × N (threads: hashing and decoding release the GIL)
            └──────────────► publish_manifest ──► follow_annotations ──► report_ingest
                                                  (a renamed photo's box and triplets
                                                   move to its new id)
"""

from __future__ import annotations

from prefect import unmapped
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from flows._results import FLOW_RESULTS
from flows._stage import stage_flow
from tasks.ingest import (
    follow_annotations,
    inspect_chunk,
    plan_ingest,
    publish_manifest,
    report_ingest,
)
from tiefvision_core.catalog.ingest import IngestSummary
from tiefvision_core.parameters.stages import IngestParameters
from tiefvision_core.run import settings_for

__all__ = ["ingest"]


@stage_flow(
    IngestParameters, name="ingest", task_runner=ThreadPoolTaskRunner(max_workers=4), **FLOW_RESULTS
)
def ingest(parameters: IngestParameters) -> IngestSummary:
    """Bring a folder or S3 prefix of photos into the catalog manifest, incrementally."""
    settings = settings_for(**parameters.settings_flags())
    images, verify_hashes = parameters.images, parameters.verify_hashes
    plan = plan_ingest(
        images,
        settings.store_url,
        parameters.chunk_size,
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
    summary = publish_manifest(
        settings.store_url, quote(plan), staged.result(), parameters.metadata
    )  # type: ignore[call-overload]
    follow_annotations(settings.store_url, summary)
    report_ingest(summary)
    return summary
