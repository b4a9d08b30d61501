"""Deep Ranking flow: box crops (incremental) → triplets → projection → supervised index.

encode(kind="box") ──► export_triplet_snapshot ──► train_projection ──► rebuild_index
                              (annotated triplets,        (hinge loss, negatives  (supervised
                               frozen)                     re-mined per batch,     space)
                                                           early stop on
                                                           validation products,
                                                           scored on held-out)
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from pydantic import SecretStr

from flows._results import FLOW_RESULTS
from flows._runtime import runtime_config
from flows.encode import encode
from flows.rebuild_index import rebuild_index
from tasks.similarity import export_triplet_snapshot, train_projection
from tiefvision_core.errors import ConfigError
from tiefvision_core.similarity.deep_ranking import DeepRankingConfig
from tiefvision_core.similarity.training import SimilarityRun

__all__ = ["train_triplets"]


@flow(name="train-triplets", **FLOW_RESULTS)
def train_triplets(
    store: str | None = None,
    encoder: str | None = None,
    weights: str = "default",
    device: Literal["auto", "cpu", "cuda"] | None = None,
    margin: float = 0.1,
    max_epochs: int = 30,
    learning_rate: float = 1e-3,
    test_fraction: float = 0.25,
    seed: int = 0,
    rebuild: bool = True,
    database: SecretStr | None = None,
) -> SimilarityRun:
    """Train the supervised similarity (Deep Ranking) and rebuild its index.

    Args:
        store: storage root (default: ``TIEFVISION_STORE_URL``, else the local store).
        encoder: encoder name (default ``TIEFVISION_ENCODER``: efficientnet_lite0).
        weights: encoder weights: "default" (pretrained, offline), "none", or a .pth path.
        device: auto, cpu or cuda (encoding).
        margin: hinge-loss margin on the mean-cosine similarity.
        max_epochs: upper bound on epochs (early stopping on validation products: a
            quarter of the products that are not held out).
        learning_rate: Adam learning rate.
        test_fraction: share of products held out (all their photos) and scored; neither
            training nor early stopping sees them.
        seed: split and training seed.
        rebuild: publish a new supervised index with the trained model.
        database: the annotations database URL (default: ``TIEFVISION_DATABASE_URL``, else
            SQLite under a local store), a secret: the run's parameters show it masked.
    """
    if not 0.0 < margin <= 2.0:
        raise ConfigError(f"margin {margin}: choose a value in (0, 2] (similarities are cosines)")
    settings, config = runtime_config(store, encoder, weights, device, None)
    encode(
        store=settings.store_url,
        encoder=settings.encoder,
        weights=weights,
        device=settings.device,
        # No mirror pass: a product with one photo trains on its map mirrored along the
        # width (deep_ranking._tensor), measured equal on grocery-packages (docs).
        kind="box",
    )
    snapshot = export_triplet_snapshot(settings.store_url, database)
    ranking = DeepRankingConfig(
        margin=margin,
        max_epochs=max_epochs,
        learning_rate=learning_rate,
        test_fraction=test_fraction,
        seed=seed,
    )
    run = train_projection(settings.store_url, config, snapshot, ranking)
    if rebuild:
        rebuild_index(
            store=settings.store_url,
            space="supervised",
            encoder=settings.encoder,
            weights=weights,
            device=settings.device,
        )
    return run
