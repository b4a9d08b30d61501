"""Prefect tasks for the similarity projection: freeze the annotated triplets and train
Deep Ranking on them."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from pydantic import SecretStr

from tasks.encoding import get_runtime
from tasks.policies import EPHEMERAL, RETRYING
from tasks.stores import get_store
from tiefvision_core.annotations.repository import open_annotations
from tiefvision_core.annotations.snapshots import Snapshot, read_snapshot
from tiefvision_core.config import load_settings
from tiefvision_core.encoding.runtime import RuntimeConfig
from tiefvision_core.run import RunKey, run_context
from tiefvision_core.similarity.deep_ranking import DeepRankingConfig
from tiefvision_core.similarity.training import SimilarityRun, fit_similarity
from tiefvision_core.vector_index.versions import open_live_index

__all__ = ["export_triplet_snapshot", "train_projection"]


@task(name="export-triplet-snapshot", **RETRYING)
def export_triplet_snapshot(store_url: str, database: SecretStr | None = None) -> Snapshot:
    """Freeze the annotated triplets; the database is ``database`` (None: the settings',
    ``TIEFVISION_DATABASE_URL``)."""
    database_url = database.get_secret_value() if database else None
    with open_annotations(
        load_settings(store_url=store_url, database_url=database_url)
    ) as annotations:
        return annotations.export_snapshot(get_store(store_url), "triplets")


@task(name="train-projection", **EPHEMERAL)
def train_projection(
    run: RunKey, config: RuntimeConfig, snapshot: Snapshot, ranking: DeepRankingConfig
) -> SimilarityRun:
    """Deep Ranking on the box crops of the run's catalog; per-epoch metrics logged and
    published."""
    context = run_context(run)
    store = context.store
    logger = get_run_logger()
    triplets = read_snapshot(store, snapshot.key) if snapshot.rows else None
    trained = fit_similarity(
        store,
        get_runtime(config).encoder,
        triplets=triplets,
        snapshot=snapshot.as_dict(),
        neighbour_index=open_live_index(store, "unsupervised"),
        config=ranking,
        catalog=context.catalog,
        on_epoch=lambda e: logger.info(
            "epoch %d: train loss %.4f, held-out loss %.4f, held-out triplet accuracy %.3f",
            e.epoch,
            e.train_loss,
            e.test_loss,
            e.test_accuracy,
        ),
    )
    create_table_artifact(
        key="deep-ranking-epochs",
        table=trained.metrics,
        description=f"Deep Ranking {trained.version}",
    )
    create_table_artifact(
        key="deep-ranking-evaluation",
        table=[
            {
                "space": "unsupervised",
                "held-out triplet accuracy": trained.unsupervised_accuracy,
                "held-out mAP@10": trained.unsupervised_map10,
            },
            {
                "space": f"supervised {trained.version}",
                "held-out triplet accuracy": trained.supervised_accuracy,
                "held-out mAP@10": trained.supervised_map10,
            },
        ],
        description=f"Loss curves: {trained.model_uri}loss-curves.png",
    )
    return trained
