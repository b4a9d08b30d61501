"""Prefect task of the ``evaluate`` stage: score what is live, publish the table. Thin:
what is scored, on which photos, is decided by ``tiefvision_core.evaluation.evaluate``."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.policies import EPHEMERAL, RETRYING
from tasks.stores import get_store
from tiefvision_core.annotations.snapshots import Snapshot, read_snapshot
from tiefvision_core.evaluation.evaluate import EvaluationReport, evaluate_catalog
from tiefvision_core.index.gate import GateComparison, gate_markdown
from tiefvision_core.vector_index.versions import SPACES

__all__ = ["evaluate_live", "report_evaluation", "report_gate"]


@task(name="evaluate-live", **RETRYING)
def evaluate_live(
    store_url: str, snapshot: Snapshot | None, spaces: tuple[str, ...] = SPACES
) -> EvaluationReport:
    """Score the live locator (on the annotations of ``snapshot``; none, or an empty one:
    the boxes its crops dataset was planned from) and each live index space of ``spaces``."""
    store = get_store(store_url)
    annotated = read_snapshot(store, snapshot.key) if snapshot and snapshot.rows else None
    return evaluate_catalog(store, annotated, spaces=spaces)


@task(name="report-evaluation", **RETRYING)
def report_evaluation(report: EvaluationReport) -> None:
    """Log the scores and what was skipped; publish the table as an artifact."""
    logger = get_run_logger()
    rows = report.rows()
    for row in rows:
        logger.info("%s on %s: %s", row["what"], row["on"], row["score"])
    for note in report.notes:
        logger.warning("%s", note)
    table = rows + [{"what": "skipped", "on": "", "score": note} for note in report.notes]
    create_table_artifact(
        key="evaluation",
        table=table or [{"what": "nothing live to evaluate", "on": "", "score": ""}],
        description="Quality of the live locator and indexes on held-out data",
    )


@task(name="report-regression-gate", **EPHEMERAL)
def report_gate(comparison: dict[str, object] | None) -> None:
    """Publish the regression gate's comparison (live vs new, delta, decision) as a
    Markdown artifact per space, and log its decision; nothing when no gate ran."""
    if comparison is None:
        return
    verdict = GateComparison.from_dict(comparison)
    logger = get_run_logger()
    log = logger.error if verdict.decision == "refused" else logger.info
    log("regression gate, %s index %s: %s — %s", verdict.space, verdict.new, verdict.decision,
        verdict.reason)  # fmt: skip
    create_markdown_artifact(
        key=f"regression-gate-{verdict.space}",
        markdown=gate_markdown(verdict),
        description=f"{verdict.space} index {verdict.new} against the live one",
    )
