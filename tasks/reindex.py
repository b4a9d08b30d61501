"""Prefect tasks of the nightly reindex: the plan, one space's index update, the run
summary (the store's lock is ``tasks.store_lock``). Thin: the decisions live in
``tiefvision_core.index.updates``."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.encoding import get_runtime
from tasks.policies import EPHEMERAL, RETRYING
from tasks.stores import get_store
from tiefvision_core.encoding.runtime import RuntimeConfig
from tiefvision_core.index.gate import GatePolicy
from tiefvision_core.index.updates import IndexUpdate, UpdatePolicy, update_space
from tiefvision_core.pipeline import reindex
from tiefvision_core.pipeline.reindex import ReindexPlan, ReindexSummary
from tiefvision_core.run import RunKey, run_context
from tiefvision_core.vector_index.kinds import IndexKindChoice

__all__ = ["plan_reindex", "report_reindex", "update_space_index"]


@task(name="plan-reindex", **RETRYING)
def plan_reindex(store_url: str) -> ReindexPlan:
    plan = reindex.plan_reindex(get_store(store_url))
    get_run_logger().info(
        "locator: %s; similarity model: %s; spaces: %s",
        plan.locator or "none (whole photos are encoded, locate skipped)",
        plan.similarity_model or "none",
        ", ".join(plan.spaces),
    )
    return plan


@task(name="update-space-index", task_run_name="update-index-{space}", **RETRYING)
def update_space_index(
    run: RunKey,
    config: RuntimeConfig,
    space: str,
    index_kind: IndexKindChoice | None,
    policy: UpdatePolicy,
    keep: int,
    gate: GatePolicy | None = None,
) -> IndexUpdate:
    """Bring one space's index up to the catalog; the update-or-rebuild choice is logged
    with its reason. A new version goes live only past the regression gate (``gate``;
    default policy when None): a refused one raises RegressionRefused."""
    context = run_context(run)
    update = update_space(
        context.store,
        get_runtime(config).encoder,
        space,
        index_kind=index_kind,
        policy=policy,
        keep=keep,
        catalog=context.catalog,
        gate=gate or GatePolicy(),
    )
    get_run_logger().info(
        "%s index: %s (%s); %s → %s, %d rows (%d new, %d changed, %d removed, "
        "%d vectors computed) in %.1f s",
        space,
        update.action,
        update.reason,
        update.before or "none",
        update.after,
        update.size,
        update.new,
        update.changed,
        update.removed,
        update.vectors_computed,
        update.seconds,
    )
    return update


@task(name="report-reindex", **EPHEMERAL)
def report_reindex(summary: ReindexSummary) -> None:
    create_markdown_artifact(
        key="reindex-summary",
        markdown=reindex.reindex_markdown(summary),
        description=f"Reindex of {summary.store_url}",
    )
    get_run_logger().info(
        "reindex: %d new, %d changed, %d removed, %d rejected; %d encoded; %s in %.1f s",
        summary.new,
        summary.changed,
        summary.removed,
        summary.rejected,
        summary.encoded,
        ", ".join(f"{u.space} {u.action} → {u.after}" for u in summary.indexes),
        summary.seconds,
    )
