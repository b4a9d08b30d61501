"""Prefect tasks for indexes: build a space's new version (self-checked, switched
atomically) and report it."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from tasks.encoding import get_runtime
from tasks.policies import EPHEMERAL, RETRYING
from tiefvision_core.encoding.runtime import RuntimeConfig
from tiefvision_core.index.gate import GatePolicy
from tiefvision_core.index.spaces import rebuild_space
from tiefvision_core.run import RunKey, run_context
from tiefvision_core.vector_index.publish import IndexVersion
from tiefvision_core.vector_index.vectors import IndexConfig

__all__ = ["build_space_index", "report_index"]


@task(name="build-space-index", **RETRYING)
def build_space_index(
    run: RunKey,
    config: RuntimeConfig,
    space: str,
    index_config: IndexConfig,
    keep: int,
    gate: GatePolicy | None = None,
) -> IndexVersion:
    """A new version of ``space``, live once it passes its self-check and the regression
    gate (``gate``; default policy when None); a refused one raises RegressionRefused."""
    context = run_context(run)
    version = rebuild_space(
        context.store,
        get_runtime(config).encoder,
        space,
        config=index_config,
        keep=keep,
        catalog=context.catalog,
        gate=gate or GatePolicy(),
    )
    get_run_logger().info(
        "%s index %s: %d vectors, %s, built in %.1f s, self-check %s",
        space,
        version.version,
        version.size,
        version.kind,
        version.build_seconds,
        version.self_check,
    )
    return version


@task(name="report-index", **EPHEMERAL)
def report_index(version: IndexVersion) -> None:
    rows = [
        {"measure": name, "value": str(value)}
        for name, value in version.as_dict().items()
        if name != "self_check"
    ]
    rows.append({"measure": "self check", "value": str(version.self_check)})
    create_table_artifact(
        key=f"index-{version.space}", table=rows, description=f"{version.space} index"
    )
