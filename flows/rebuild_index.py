"""Index rebuild flow: box crops encoded (incremental) → a new index version → CURRENT.

lock ──► encode(kind="box", flips) ──► build_space_index ──► report_index
(store   (the located box of every     (vectors, FAISS index, self-check,
 lock)    photo, whole image without    then CURRENT switched; old versions
          a locator)                    kept, the last `keep`)

The store lock is the reindex's: a rebuild and a reindex (or two rebuilds) never read
encodings and switch a space's CURRENT at the same time.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow

from flows._results import FLOW_RESULTS
from flows._runtime import runtime_config
from flows.encode import encode
from tasks.search import build_space_index, report_index
from tasks.store_lock import store_lock
from tiefvision_core.index.kinds import IndexKindChoice
from tiefvision_core.index.vectors import IndexConfig
from tiefvision_core.index.versions import IndexVersion

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
    """
    settings, config = runtime_config(store, encoder, weights, device, batch_size)
    with store_lock(settings.store_url, lock_timeout, lock_ttl, job="rebuild-index") as lock:
        encode(
            store=settings.store_url,
            encoder=settings.encoder,
            weights=weights,
            device=settings.device,
            batch_size=settings.batch_size,
            kind="box",
            flips=True,
        )
        lock.check()  # never switch a pointer once another run took the lock
        version = build_space_index(
            settings.store_url, config, space, IndexConfig(kind=index_kind), keep
        )
    report_index(version)
    return version
