"""Garbage collection as a flow: lock ──► collect (what nothing live refers to) ──► report.

The nightly reindex runs the same collection as its last step, inside the lock it already
holds (``flows/reindex.py``); this flow is for on-demand runs and ``tiefvision gc``.
"""

from __future__ import annotations

from prefect import flow

from flows._results import FLOW_RESULTS
from tasks.gc import collect_garbage_task, gc_lock
from tiefvision_core.config import load_settings
from tiefvision_core.pipeline.gc import GcReport
from tiefvision_core.vector_index.versions import STAGING_GRACE_S

__all__ = ["gc"]


@flow(name="gc", **FLOW_RESULTS)
def gc(
    store: str | None = None,
    retention: int | None = None,
    grace_hours: float = STAGING_GRACE_S / 3600,
    dry_run: bool = False,
    lock_timeout: float = 600.0,
    lock_ttl: float = 120.0,
) -> GcReport:
    """Delete what nothing live refers to: encodings and boxes of removed or re-shot
    photos, index, model and manifest versions beyond the retention, old leftovers, and —
    once no retained manifest lists a photo's bytes — its annotations, the annotation
    snapshots and crops datasets naming it.

    Args:
        store: storage root (default: ``TIEFVISION_STORE_URL``, else the local store).
        retention: versions kept per kind, the live one included (default
            ``TIEFVISION_RETENTION``: 3).
        grace_hours: temporary files, work lists and staging younger than this are kept
            (they may belong to a job still running).
        dry_run: list what would go and its bytes; delete nothing.
        lock_timeout: seconds to wait for a reindex or rebuild running on this store.
        lock_ttl: seconds without a heartbeat after which a holder counts as dead.
    """
    settings = load_settings(store_url=store)
    keep = retention or settings.retention
    with gc_lock(settings.store_url, lock_timeout, lock_ttl):
        return collect_garbage_task(settings.store_url, keep, grace_hours * 3600, dry_run)
