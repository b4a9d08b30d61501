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
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from flows._results import FLOW_RESULTS
from flows._stage import stage_flow
from flows.encode import encode
from flows.ingest import ingest
from flows.locate import locate
from flows.rebuild_index import rebuild_index
from flows.train_locator import train_locator
from flows.train_triplets import train_triplets
from tiefvision_core.annotations.database import database_url_for
from tiefvision_core.annotations.repository import AnnotationDatabase
from tiefvision_core.config import Settings
from tiefvision_core.errors import InputError
from tiefvision_core.parameters.stages import (
    EncodeParameters,
    IngestParameters,
    LocateParameters,
    PipelineParameters,
    RebuildIndexParameters,
    TrainLocatorParameters,
    TrainTripletsParameters,
)
from tiefvision_core.pipeline.stages import TrainingPlan, plan_training
from tiefvision_core.run import settings_for, start_run

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


def _training_plan(settings: Settings, min_boxes: int, min_products: int) -> TrainingPlan:
    """What the catalog as ingested (the run's snapshot, which encode then shares) and the
    annotations allow training."""
    try:
        url = database_url_for(settings)
    except InputError:  # an S3 store without a database: no annotations to train on
        counts = {"boxes": 0, "triplets": 0}
    else:
        with AnnotationDatabase(url) as annotations:
            counts = annotations.counts()
    manifest = start_run(settings).catalog.manifest
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


@stage_flow(PipelineParameters, name="pipeline", **FLOW_RESULTS)
def pipeline(parameters: PipelineParameters) -> PipelineRun:
    """Ingest, encode, train and locate, index and train similarity: the whole chain."""
    logger = get_run_logger()
    settings = settings_for(**parameters.settings_flags())
    given = parameters.resolved(settings)  # the subflows see what the settings decided
    seconds: dict[str, float] = {}

    def stage(name: str, call, **kwargs):
        started = time.perf_counter()
        result = call(**kwargs)
        seconds[name] = round(time.perf_counter() - started, 2)
        return result

    ingested = stage("ingest", ingest, **given.arguments_for(IngestParameters))
    plan = _training_plan(settings, given.min_boxes, given.min_products)
    run = PipelineRun(plan=plan, ingest=ingested, seconds=seconds)
    run.encode = stage("encode", encode, **given.arguments_for(EncodeParameters))
    if run.plan.train_locator:
        locator = given.arguments_for(TrainLocatorParameters, min_images=given.min_boxes)
        run.locator = stage("train-locator", train_locator, **locator)
        run.locate = stage("locate", locate, **given.arguments_for(LocateParameters))
    else:
        logger.info("Locator skipped: %s; search uses whole photos", run.plan.locator_reason)
    index = given.arguments_for(RebuildIndexParameters)
    run.unsupervised_index = stage("rebuild-index", rebuild_index, **index)
    if run.plan.train_similarity:
        similarity = given.arguments_for(TrainTripletsParameters)
        run.similarity = stage("train-triplets", train_triplets, **similarity)
    else:
        logger.info("Deep Ranking skipped: %s", run.plan.similarity_reason)
    create_table_artifact(
        key="pipeline-run",
        table=[{"stage": name, "seconds": seconds} for name, seconds in run.seconds.items()],
        description=f"Pipeline on {given.images}: locator — {run.plan.locator_reason}; "
        f"similarity — {run.plan.similarity_reason}",
    )
    return run
