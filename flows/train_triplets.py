"""Deep Ranking flow: box crops (incremental) → triplets → projection → supervised index.

encode(kind="box") ──► export_triplet_snapshot ──► train_projection ──► rebuild_index
                              (annotated triplets,        (hinge loss, negatives  (supervised
                               frozen)                     re-mined per batch,     space)
                                                           early stop on
                                                           validation products,
                                                           scored on held-out)
"""

from __future__ import annotations

from flows._results import FLOW_RESULTS
from flows._runtime import runtime_config
from flows._stage import stage_flow
from flows.encode import encode
from flows.rebuild_index import rebuild_index
from tasks.similarity import export_triplet_snapshot, train_projection
from tiefvision_core.parameters.stages import (
    EncodeParameters,
    RebuildIndexParameters,
    TrainTripletsParameters,
)
from tiefvision_core.run import start_run
from tiefvision_core.similarity.deep_ranking import DeepRankingConfig
from tiefvision_core.similarity.training import SimilarityRun

__all__ = ["train_triplets"]


@stage_flow(TrainTripletsParameters, name="train-triplets", **FLOW_RESULTS)
def train_triplets(parameters: TrainTripletsParameters) -> SimilarityRun:
    """Train the supervised similarity (Deep Ranking) and rebuild its index."""
    settings, config = runtime_config(parameters)
    run = start_run(settings)  # the encode subflow and the training share its catalog
    given = parameters.resolved(settings)  # the subflows see what the settings decided
    # No mirror pass: a product with one photo trains on its map mirrored along the
    # width (deep_ranking._tensor), measured equal on grocery-packages (docs).
    encode(**given.arguments_for(EncodeParameters, kind="box"))
    snapshot = export_triplet_snapshot(settings.store_url, given.database)
    ranking = DeepRankingConfig(
        margin=given.margin,
        max_epochs=given.max_epochs,
        learning_rate=given.learning_rate,
        test_fraction=given.test_fraction,
        seed=given.seed,
    )
    trained = train_projection(run.key, config, snapshot, ranking)
    if given.rebuild:
        rebuild_index(**given.arguments_for(RebuildIndexParameters, space="supervised"))
    return trained
