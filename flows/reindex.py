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

from flows._results import FLOW_RESULTS
from flows._runtime import runtime_config
from flows._stage import stage_flow
from flows.encode import encode
from flows.ingest import ingest
from flows.locate import locate
from tasks.evaluate import report_gate
from tasks.gc import collect_garbage_task
from tasks.reindex import plan_reindex, report_reindex, update_space_index
from tasks.store_lock import store_lock
from tiefvision_core.index.gate import GatePolicy
from tiefvision_core.index.updates import UpdatePolicy
from tiefvision_core.parameters.stages import (
    EncodeParameters,
    IngestParameters,
    LocateParameters,
    ReindexParameters,
)
from tiefvision_core.pipeline.reindex import ReindexRefused, ReindexSummary, StageClock
from tiefvision_core.run import start_run
from tiefvision_core.vector_index.pointer import RegressionRefused

__all__ = ["reindex"]


@stage_flow(ReindexParameters, name="reindex", **FLOW_RESULTS)
def reindex(parameters: ReindexParameters) -> ReindexSummary:
    """Bring the catalog, its boxes, encodings and every live index up to the source."""
    started = time.perf_counter()
    settings, config = runtime_config(parameters)
    given = parameters.resolved(settings)  # the subflows see what the settings decided
    policy = UpdatePolicy(max_churn=given.max_churn, max_growth=given.max_growth)
    gate = GatePolicy(
        settings.regression_tolerance, given.allow_regression, rule=settings.regression_rule
    )
    url, clock = settings.store_url, StageClock()
    with store_lock(url, given.lock_timeout, given.lock_ttl, job="reindex") as lock:
        with clock("ingest"):
            catalog = ingest(**given.arguments_for(IngestParameters))
        plan = plan_reindex(url)
        located = None
        if plan.locator:
            with clock("locate"):
                located = locate(**given.arguments_for(LocateParameters))
        with clock("encode"):
            # no mirror pass: the index never reads one
            encoded = encode(**given.arguments_for(EncodeParameters, kind="box"))
        run = start_run(settings).key  # the catalog this run ingested, as encode saw it
        updates, gates, refused = [], [], []
        for space in plan.spaces:
            lock.check()  # never switch a pointer once another run took the lock
            with clock(f"index {space}"):
                try:
                    update = update_space_index(
                        run, config, space, given.index_kind, policy, given.keep, gate
                    )
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
                    url, settings.retention, given.gc_grace_hours * 3600
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
