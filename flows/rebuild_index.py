"""Index rebuild flow: box crops encoded (incremental) → a new index version → CURRENT.

lock ──► encode(kind="box") ──► build_space_index ──► report_index, report_gate
(store   (the located box of every     (vectors, FAISS index, self-check,
 lock)    photo, whole image without    regression gate, then CURRENT
          a locator)                    switched; old versions kept, the
                                        last `keep`)

The regression gate (``tiefvision_core.index.gate``) scores the new version against the
live one before the switch: a drop of mAP@10 beyond the tolerance keeps the live version,
leaves the new one on storage, publishes the comparison and fails the run.

No mirror pass (one CNN pass per photo here): an index never reads a mirror, and Deep
Ranking mirrors a map along its width where it needs one (measured equal on
grocery-packages, docs/benchmarks.md); ``tiefvision encode --kind box --flips`` still
stores exact mirrors for whoever wants them.

The store lock is the reindex's: a rebuild and a reindex (or two rebuilds) never read
encodings and switch a space's CURRENT at the same time.
"""

from __future__ import annotations

from flows._results import FLOW_RESULTS
from flows._runtime import runtime_config
from flows._stage import stage_flow
from flows.encode import encode
from tasks.evaluate import report_gate
from tasks.indexes import build_space_index, report_index
from tasks.store_lock import store_lock
from tiefvision_core.index.gate import GatePolicy
from tiefvision_core.parameters.stages import EncodeParameters, RebuildIndexParameters
from tiefvision_core.run import start_run
from tiefvision_core.vector_index.pointer import RegressionRefused
from tiefvision_core.vector_index.publish import IndexVersion
from tiefvision_core.vector_index.vectors import IndexConfig

__all__ = ["rebuild_index"]


@stage_flow(RebuildIndexParameters, name="rebuild-index", **FLOW_RESULTS)
def rebuild_index(parameters: RebuildIndexParameters) -> IndexVersion:
    """Rebuild one search space's index from the catalog's current box crops."""
    settings, config = runtime_config(parameters)
    run = start_run(settings)  # the encode subflow and the index share its catalog snapshot
    given = parameters.resolved(settings)
    gate = GatePolicy(
        settings.regression_tolerance, given.allow_regression, rule=settings.regression_rule
    )
    url = settings.store_url
    with store_lock(url, given.lock_timeout, given.lock_ttl, job="rebuild-index") as lock:
        # no mirror pass: an index never reads mirrors
        encode(**given.arguments_for(EncodeParameters, kind="box"))
        lock.check()  # never switch a pointer once another run took the lock
        try:
            version = build_space_index(
                run.key, config, given.space, IndexConfig(kind=given.index_kind), given.keep, gate
            )
        except RegressionRefused as refused:
            report_gate(refused.comparison)
            raise
    report_index(version)
    report_gate(version.gate)
    return version
