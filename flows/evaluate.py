"""Evaluation as a flow: annotation snapshot ──► score what is live ──► report.

Nothing is trained or switched: the scores land as ``evaluation.json`` next to the locator
and index versions they score, so the next run (or the next version) can compare.
"""

from __future__ import annotations

from prefect import flow

from flows._results import FLOW_RESULTS
from tasks.evaluate import evaluate_live, report_evaluation
from tasks.locator import export_box_snapshot
from tasks.stores import get_store
from tiefvision_core.config import load_settings
from tiefvision_core.evaluation.evaluate import EvaluationReport
from tiefvision_core.storage.layout import LOCATOR_CURRENT
from tiefvision_core.vector_index.versions import SPACES, check_space

__all__ = ["evaluate"]


@flow(name="evaluate", **FLOW_RESULTS)
def evaluate(store: str | None = None, spaces: list[str] | None = None) -> EvaluationReport:
    """Score the live locator on annotated photos it did not train on, and each live
    index space's retrieval by ``product_id``; write and report the results.

    Args:
        store: storage root (default: ``TIEFVISION_STORE_URL``, else the local store).
        spaces: the index spaces to score (default: unsupervised and supervised).
    """
    settings = load_settings(store_url=store)
    # The current annotations only matter to a live locator (and need its catalog).
    has_locator = get_store(settings.store_url).read_pointer(LOCATOR_CURRENT) is not None
    snapshot = export_box_snapshot(settings.store_url) if has_locator else None
    report = evaluate_live(
        settings.store_url, snapshot, tuple(check_space(s) for s in spaces or SPACES)
    )
    report_evaluation(report)
    return report
