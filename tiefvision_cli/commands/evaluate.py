"""``evaluate``: what is live, scored on held-out data (a flow), or the stored scores of
every version (``--history``, storage reads only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from tiefvision_cli.commands import console, print_json
from tiefvision_cli.options import JsonOption, SpacesOption, StoreOption
from tiefvision_cli.prefect_server import flow_run, start_early
from tiefvision_cli.preflight import preflight

if TYPE_CHECKING:
    from tiefvision_core.evaluation.evaluate import EvaluationReport

__all__ = ["evaluate", "run_evaluate"]


def evaluate(
    store: StoreOption = None,
    space: SpacesOption = None,
    history: Annotated[
        bool,
        typer.Option(
            "--history",
            help="Show the trend instead: every version's stored scores, the live one marked.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Score what is live on held-out data.

    The locator's boxes (IoU against baselines) on annotated photos it did not train on,
    and each index space's P@1, P@5 and mAP@10 by product_id. The scores are written next
    to each version (evaluation.json).

    With --history: read those files back for every version, oldest first, and compute
    nothing.
    """
    from tiefvision_core.vector_index.versions import SPACES, check_space

    spaces: list[str] = list(SPACES) if space is None else [check_space(space)]
    if history:
        from tiefvision_core.evaluation.evaluate import evaluation_history

        rows = evaluation_history(preflight(store=store).store, spaces, locator=space is None)
        if as_json:
            print_json({"history": rows})
            return
        from tiefvision_cli.report import print_evaluation_history

        print_evaluation_history(console, rows)
        return
    report = run_evaluate(store, spaces)
    if as_json:
        print_json(report.as_dict())
        return
    from tiefvision_cli.report import print_evaluation

    print_evaluation(console, report)


def run_evaluate(store: str | None, spaces: list[str] | None = None) -> EvaluationReport:
    """The evaluate flow after the checks (also the demo's last step)."""
    from tiefvision_core.parameters.stages import EvaluateParameters

    start_early()  # Prefect's server boots while the store is checked
    parameters = EvaluateParameters.model_validate({"store": store, "spaces": spaces})
    settings = preflight(parameters=parameters).settings
    import flows.evaluate

    with flow_run(console, progress=False):
        return flows.evaluate.evaluate(**parameters.resolved(settings).arguments())
