"""Index rebuild flow: box crops encoded (incremental) → a new index version → CURRENT.

encode(kind="box", flips) ──► build_space_index ──► report_index
(the located box of every     (vectors, FAISS index, self-check,
 photo, whole image without    then CURRENT switched; old versions
 a locator)                    kept, the last `keep`)
"""

from __future__ import annotations

from typing import Literal

from prefect import flow

from flows._results import FLOW_RESULTS
from flows._runtime import runtime_config
from flows.encode import encode
from tasks.search import build_space_index, report_index
from tiefvision_core.index import IndexConfig
from tiefvision_core.index_store import IndexVersion

__all__ = ["rebuild_index"]


@flow(name="rebuild-index", **FLOW_RESULTS)
def rebuild_index(
    store: str | None = None,
    space: Literal["unsupervised", "supervised"] = "unsupervised",
    encoder: str | None = None,
    weights: str = "default",
    device: Literal["auto", "cpu", "cuda"] | None = None,
    batch_size: int | None = None,
    index_kind: Literal["auto", "exact", "hnsw", "ivfpq"] = "auto",
    keep: int = 3,
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
    """
    settings, config = runtime_config(store, encoder, weights, device, batch_size)
    encode(
        store=settings.store_url,
        encoder=settings.encoder,
        weights=weights,
        device=settings.device,
        batch_size=settings.batch_size,
        kind="box",
        flips=True,
    )
    version = build_space_index(
        settings.store_url, config, space, IndexConfig(kind=index_kind), keep
    )
    report_index(version)
    return version
