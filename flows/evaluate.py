"""Evaluation as a flow: annotation snapshot ──► score what is live ──► report.

Nothing is trained or switched: the scores land as ``evaluation.json`` next to the locator
and index versions they score, so the next run (or the next version) can compare.
"""

from __future__ import annotations

from flows._results import FLOW_RESULTS
from flows._stage import stage_flow
from tasks.evaluate import evaluate_live, report_evaluation
from tasks.locator import export_box_snapshot
from tiefvision_core.evaluation.evaluate import EvaluationReport
from tiefvision_core.parameters.stages import EvaluateParameters
from tiefvision_core.run import settings_for, store_for
from tiefvision_core.storage.layout import LOCATOR_CURRENT
from tiefvision_core.vector_index.versions import SPACES

__all__ = ["evaluate"]


@stage_flow(EvaluateParameters, name="evaluate", **FLOW_RESULTS)
def evaluate(parameters: EvaluateParameters) -> EvaluationReport:
    """Score the live locator on annotated photos it did not train on, and each live
    index space's retrieval by ``product_id``; write and report the results."""
    settings = settings_for(**parameters.settings_flags())
    # The current annotations only matter to a live locator (and need its catalog).
    has_locator = store_for(settings).read_pointer(LOCATOR_CURRENT) is not None
    snapshot = export_box_snapshot(settings.store_url) if has_locator else None
    spaces = tuple(parameters.spaces or SPACES)  # each one of SPACES: the model checked it
    report = evaluate_live(settings.store_url, snapshot, spaces)
    report_evaluation(report)
    return report
