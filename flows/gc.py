"""Garbage collection as a flow: lock ──► collect (what nothing live refers to) ──► report.

The nightly reindex runs the same collection as its last step, inside the lock it already
holds (``flows/reindex.py``); this flow is for on-demand runs and ``tiefvision gc``.
"""

from __future__ import annotations

from flows._results import FLOW_RESULTS
from flows._stage import stage_flow
from tasks.gc import collect_garbage_task, gc_lock
from tiefvision_core.parameters.stages import GcParameters
from tiefvision_core.pipeline.gc import GcReport
from tiefvision_core.run import settings_for

__all__ = ["gc"]


@stage_flow(GcParameters, name="gc", **FLOW_RESULTS)
def gc(parameters: GcParameters) -> GcReport:
    """Delete what nothing live refers to: encodings and boxes of removed or re-shot
    photos, index, model and manifest versions beyond the retention, old leftovers, and —
    once no retained manifest lists a photo's bytes — its annotations, the annotation
    snapshots and crops datasets naming it."""
    settings = settings_for(**parameters.settings_flags())  # the store, the retention
    url, grace_s = settings.store_url, parameters.grace_hours * 3600
    with gc_lock(url, parameters.lock_timeout, parameters.lock_ttl):
        return collect_garbage_task(url, settings.retention, grace_s, parameters.dry_run)
