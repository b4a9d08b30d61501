"""Prefect tasks for the locator: annotation snapshot, crops dataset, training, box
inference. Thin: each wraps one core function and adds retries, logs and artifacts.

Tasks exchange small references (store URLs, plans, dataset ids, model versions); maps and
weights stay on storage and are opened where they are used.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import SecretStr

from tasks.encoding import get_runtime
from tasks.policies import EPHEMERAL, RETRYING
from tasks.progress import advance
from tasks.stores import get_store
from tiefvision_core import locator
from tiefvision_core.annotations.repository import open_annotations
from tiefvision_core.annotations.snapshots import Snapshot, read_snapshot
from tiefvision_core.config import load_settings
from tiefvision_core.encoding.runtime import RuntimeConfig
from tiefvision_core.index.models import locator_model
from tiefvision_core.locator.crops import CropConfig, CropDataset, CropPart, CropPlan, PartSpec
from tiefvision_core.locator.locate import LocatedPart, LocatePlan, LocateShard, LocateSummary
from tiefvision_core.locator.runs import LocatorRun, fit_locator
from tiefvision_core.locator.training import TrainConfig
from tiefvision_core.run import RunKey, run_context

__all__ = [
    "build_crop_part",
    "export_box_snapshot",
    "finish_crops",
    "locate_shard",
    "plan_crops",
    "plan_locate",
    "report_crops",
    "report_locate",
    "train_locator_heads",
]


@task(name="export-box-snapshot", **RETRYING)
def export_box_snapshot(store_url: str, database: SecretStr | None = None) -> Snapshot:
    """Freeze the boxes as a content-addressed Parquet file; the database is ``database``
    (None: the settings', ``TIEFVISION_DATABASE_URL``)."""
    database_url = database.get_secret_value() if database else None
    with open_annotations(
        load_settings(store_url=store_url, database_url=database_url)
    ) as annotations:
        snapshot = annotations.export_snapshot(get_store(store_url), "boxes")
    get_run_logger().info(
        "%d boxes in snapshot %s (%d stale left out: drawn on a photo's older bytes)",
        snapshot.rows,
        snapshot.key,
        snapshot.stale,
    )
    return snapshot


@task(name="plan-crops", **RETRYING)
def plan_crops(
    store_url: str, config: RuntimeConfig, snapshot: Snapshot, crop_config: CropConfig
) -> CropPlan:
    store = get_store(store_url)
    plan = locator.crops.plan_crops(
        store,
        get_runtime(config).encoder,
        read_snapshot(store, snapshot.key),
        snapshot_key=snapshot.key,
        snapshot_digest=snapshot.digest,
        config=crop_config,
        stale=snapshot.stale,
    )
    get_run_logger().info(
        "crops dataset %s: %d annotated images (%d train, %d test, %d stale) in %d parts",
        plan.dataset_id,
        plan.images,
        plan.train_images,
        plan.test_images,
        plan.stale,
        len(plan.parts),
    )
    return plan


@task(name="encode-crop-part", task_run_name="encode-crop-part-{spec.part_id:.8}", **RETRYING)
def build_crop_part(
    store_url: str,
    config: RuntimeConfig,
    plan: CropPlan,
    spec: PartSpec,
    scales: tuple[int, ...],
    progress_id: str | None = None,
) -> CropPart:
    result = locator.crops.build_part(get_store(store_url), get_runtime(config), plan, spec, scales)
    advance(progress_id, "crops", spec.stop - spec.start)
    return result


@task(name="finish-crops", **RETRYING)
def finish_crops(
    store_url: str, config: RuntimeConfig, plan: CropPlan, crop_config: CropConfig
) -> CropDataset:
    return locator.crops.finish_crops(
        get_store(store_url), get_runtime(config).encoder, plan, crop_config
    )


@task(name="report-crops", **EPHEMERAL)
def report_crops(dataset: CropDataset) -> None:
    rows = [{"measure": f"images: {k}", "value": str(v)} for k, v in dataset.images.items()]
    rows += [{"measure": f"windows: {k}", "value": str(v)} for k, v in dataset.windows.items()]
    rows += [
        {"measure": "rejected maps", "value": str(dataset.rejected)},
        {"measure": "scales", "value": str(list(dataset.scales))},
        {"measure": "annotation snapshot", "value": dataset.snapshot_key},
        {"measure": "encoder version", "value": dataset.encoder_version},
    ]
    create_table_artifact(
        key="crops-summary", table=rows, description=f"Crops dataset {dataset.dataset_id}"
    )


@task(name="train-locator-heads", **EPHEMERAL)
def train_locator_heads(
    store_url: str,
    dataset_id: str,
    train_config: TrainConfig,
    threshold: float,
    device: str,
) -> LocatorRun:
    """Train, evaluate on held-out photos, save; per-epoch metrics go to the log and an
    artifact, the held-out pictures to the model's folder (linked from an artifact)."""
    store = get_store(store_url)
    logger = get_run_logger()
    dataset = locator.crops.read_dataset(store, dataset_id)
    settings = load_settings()
    _, run = fit_locator(
        store,
        dataset,
        config=train_config,
        threshold=threshold,
        device=device,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        on_epoch=lambda m: logger.info(
            "epoch %d: train loss %.4f, test loss %.4f, test accuracy %.3f, box error %.3f",
            m.epoch,
            m.train_loss,
            m.test_loss,
            m.test_accuracy,
            m.test_box_error,
        ),
    )
    create_table_artifact(
        key="locator-epochs", table=run.metrics, description=f"Locator {run.version}: epochs"
    )
    create_table_artifact(
        key="locator-evaluation",
        table=run.evaluation_table,
        description=f"Locator {run.version}: held-out boxes vs baselines",
    )
    create_markdown_artifact(
        key="locator-pictures",
        markdown=(
            f"**Locator {run.version}** (best epoch {run.best_epoch} of {run.epochs})\n\n"
            f"- held-out boxes (true green, predicted red): [{run.grid_uri}]({run.grid_uri})\n"
            f"- IoU histogram: [{run.histogram_uri}]({run.histogram_uri})\n"
        ),
    )
    return run


@task(name="plan-locate", **RETRYING)
def plan_locate(
    run: RunKey, config: RuntimeConfig, version: str | None, shard_size: int
) -> LocatePlan:
    context = run_context(run)
    model = locator.model_files.load_locator(
        context.store, version, encoder_version=get_runtime(config).encoder.version
    )
    plan = locator.locate.plan_locate(
        context.store, model, shard_size=shard_size, catalog=context.catalog
    )
    get_run_logger().info(
        "locator %s: %d images, %d already located, %d to locate in %d shards",
        model.version,
        plan.images,
        plan.already_located,
        plan.to_locate,
        len(plan.shards),
    )
    return plan


@task(name="locate-shard", task_run_name="locate-shard-{shard.shard_id:.8}", **RETRYING)
def locate_shard(
    run: RunKey,
    config: RuntimeConfig,
    version: str,
    plan: LocatePlan,
    shard: LocateShard,
    progress_id: str | None = None,
) -> LocatedPart:
    store = run_context(run).store
    runtime = get_runtime(config)
    model = locator_model(store, version, runtime.encoder.version)  # once per process
    return locator.locate.locate_shard(
        store,
        runtime,
        model,
        plan,
        shard,
        on_image=lambda n: advance(progress_id, "locate", n),
    )


@task(name="report-locate", **EPHEMERAL)
def report_locate(summary: LocateSummary) -> None:
    create_table_artifact(
        key="locate-summary",
        table=[{"measure": k, "value": str(v)} for k, v in summary.as_dict().items()],
        description=f"Boxes of locator {summary.locator_version}",
    )
    get_run_logger().info(
        "located %s images (%s fell back to the whole image, %s rejected) into %s",
        summary.located,
        summary.fallback,
        summary.rejected,
        summary.boxes_uri,
    )
