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

from typing import Literal

from prefect import flow

from flows._results import FLOW_RESULTS
from flows._runtime import runtime_config
from flows.encode import encode
from tasks.evaluate import report_gate
from tasks.indexes import build_space_index, report_index
from tasks.store_lock import store_lock
from tiefvision_core.index.gate import GatePolicy
from tiefvision_core.run import start_run
from tiefvision_core.vector_index.kinds import IndexKindChoice
from tiefvision_core.vector_index.pointer import RegressionRefused
from tiefvision_core.vector_index.publish import IndexVersion
from tiefvision_core.vector_index.vectors import IndexConfig

__all__ = ["rebuild_index"]


@flow(name="rebuild-index", **FLOW_RESULTS)
def rebuild_index(
    store: str | None = None,
    space: Literal["unsupervised", "supervised"] = "unsupervised",
    encoder: str | None = None,
    weights: str = "default",
    device: Literal["auto", "cpu", "cuda"] | None = None,
    batch_size: int | None = None,
    index_kind: IndexKindChoice = "auto",
    keep: int = 3,
    lock_timeout: float = 600.0,
    lock_ttl: float = 120.0,
    tolerance: float | None = None,
    allow_regression: bool = False,
) -> IndexVersion:
    """Rebuild one search space's index from the catalog's current box crops.

    Args:
        store: storage root (default: ``TIEFVISION_STORE_URL``, else the local store).
        space: unsupervised (mean cosine of encodings) or supervised (Deep Ranking).
        encoder: encoder name (default ``TIEFVISION_ENCODER``: efficientnet_lite0).
        weights: encoder weights: "default" (pretrained, offline), "none", or a .pth path.
        device: auto, cpu or cuda.
        batch_size: images per forward pass; empty = measured per device.
        index_kind: auto (exact while the vectors fit 64 MiB, else HNSW + exact re-ranking),
            or force exact, hnsw or ivfpq (compressed).
        keep: index versions kept on storage (the live one included).
        lock_timeout: seconds to wait for a reindex or rebuild-index already running on
            this store.
        lock_ttl: seconds without a heartbeat after which a holder counts as dead.
        tolerance: mAP@10 the new version may lose against the live one and still go live
            (default ``TIEFVISION_REGRESSION_TOLERANCE``: 0.02).
        allow_regression: let a larger drop go live too (the comparison is still published).
    """
    settings, config = runtime_config(
        store, encoder, weights, device, batch_size, regression_tolerance=tolerance
    )
    run = start_run(settings)  # the encode subflow and the index share its catalog snapshot
    gate = GatePolicy(
        settings.regression_tolerance if tolerance is None else tolerance,
        allow_regression,
        rule=settings.regression_rule,
    )
    with store_lock(settings.store_url, lock_timeout, lock_ttl, job="rebuild-index") as lock:
        encode(
            store=settings.store_url,
            encoder=settings.encoder,
            weights=weights,
            device=settings.device,
            batch_size=settings.batch_size,
            kind="box",  # no mirror pass: an index never reads mirrors
        )
        lock.check()  # never switch a pointer once another run took the lock
        try:
            version = build_space_index(
                run.key, config, space, IndexConfig(kind=index_kind), keep, gate
            )
        except RegressionRefused as refused:
            report_gate(refused.comparison)
            raise
    report_index(version)
    report_gate(version.gate)
    return version
