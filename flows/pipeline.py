"""The whole training-to-serving chain, as subflows; what ``make demo`` runs.

ingest ──► encode (whole photos)
       ──► train-locator (crops inside) ──► locate          when ≥ 20 photos are annotated
       ──► rebuild-index unsupervised (box crops encoded first)
       ──► train-triplets (+ rebuild-index supervised)       when products or triplets exist

Every stage is incremental, so rerunning the pipeline redoes only what changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows._results import FLOW_RESULTS
from flows.encode import encode
from flows.ingest import ingest
from flows.locate import locate
from flows.rebuild_index import rebuild_index
from flows.train_locator import train_locator
from flows.train_triplets import train_triplets
from tasks.stores import get_store
from tiefvision_core.annotations.database import database_url_for
from tiefvision_core.annotations.repository import AnnotationDatabase
from tiefvision_core.catalog.manifest import read_manifest
from tiefvision_core.config import load_settings
from tiefvision_core.errors import InputError
from tiefvision_core.pipeline.stages import TrainingPlan, plan_training

__all__ = ["PipelineRun", "pipeline"]


@dataclass
class PipelineRun:
    """Each stage's own summary (None: skipped, see the plan) and how long it took."""

    plan: TrainingPlan
    ingest: Any
    encode: Any = None
    locator: Any = None
    locate: Any = None
    unsupervised_index: Any = None
    similarity: Any = None
    seconds: dict[str, float] = field(default_factory=dict)


def _training_plan(store: str, min_boxes: int, min_products: int) -> TrainingPlan:
    settings = load_settings(store_url=store)
    try:
        url = database_url_for(settings)
    except InputError:  # an S3 store without a database: no annotations to train on
        counts = {"boxes": 0, "triplets": 0}
    else:
        with AnnotationDatabase(url) as annotations:
            counts = annotations.counts()
    manifest = read_manifest(get_store(store))
    products = 0
    if manifest is not None and "product_id" in manifest.column_names:
        products = len(set(manifest["product_id"].drop_null().to_pylist()))
    return plan_training(
        counts["boxes"],
        products,
        counts["triplets"],
        min_boxes=min_boxes,
        min_products=min_products,
    )


@flow(name="pipeline", **FLOW_RESULTS)
def pipeline(
    images: str,
    store: str | None = None,
    metadata: str | None = None,
    encoder: str | None = None,
    device: Literal["auto", "cpu", "cuda"] | None = None,
    min_boxes: int = 20,
    min_products: int = 8,
) -> PipelineRun:
    """Ingest, encode, train and locate, index and train similarity: the whole chain.

    Args:
        images: the catalog: a local folder or ``s3://bucket/prefix``.
        store: storage root (default: ``TIEFVISION_STORE_URL``, else the local store).
        metadata: optional CSV/Parquet with ``product_id``, ``category``, … per image.
        encoder: encoder name (default ``TIEFVISION_ENCODER``: efficientnet_lite0).
        device: auto, cpu or cuda.
        min_boxes: annotated photos needed to train the locator.
        min_products: products (``product_id``) needed to train Deep Ranking.
    """
    logger = get_run_logger()
    settings = load_settings(store_url=store, encoder=encoder, device=device)
    common = {"store": settings.store_url, "encoder": settings.encoder, "device": settings.device}
    seconds: dict[str, float] = {}

    def stage(name: str, call, **kwargs):
        started = time.perf_counter()
        result = call(**kwargs)
        seconds[name] = round(time.perf_counter() - started, 2)
        return result

    ingested = stage("ingest", ingest, images=images, store=settings.store_url, metadata=metadata)
    plan = _training_plan(settings.store_url, min_boxes, min_products)
    run = PipelineRun(plan=plan, ingest=ingested, seconds=seconds)
    run.encode = stage("encode", encode, **common)
    if run.plan.train_locator:
        run.locator = stage("train-locator", train_locator, **common, min_images=min_boxes)
        run.locate = stage("locate", locate, **common)
    else:
        logger.info("Locator skipped: %s; search uses whole photos", run.plan.locator_reason)
    run.unsupervised_index = stage("rebuild-index", rebuild_index, **common)
    if run.plan.train_similarity:
        run.similarity = stage("train-triplets", train_triplets, **common)
    else:
        logger.info("Deep Ranking skipped: %s", run.plan.similarity_reason)
    create_table_artifact(
        key="pipeline-run",
        table=[{"stage": name, "seconds": seconds} for name, seconds in run.seconds.items()],
        description=f"Pipeline on {images}: locator — {run.plan.locator_reason}; "
        f"similarity — {run.plan.similarity_reason}",
    )
    return run
