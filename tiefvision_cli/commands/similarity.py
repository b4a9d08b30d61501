"""``train-triplets``: the supervised similarity (Deep Ranking) and its index (a flow)."""

from __future__ import annotations

from tiefvision_cli.commands import console, print_json
from tiefvision_cli.options import JsonRunOption
from tiefvision_cli.parameters import stage_options
from tiefvision_cli.prefect_server import flow_run, start_early
from tiefvision_cli.preflight import preflight
from tiefvision_core.parameters.stages import TrainTripletsParameters

__all__ = ["train_triplets"]


@stage_options(TrainTripletsParameters)
def train_triplets(parameters: TrainTripletsParameters, as_json: JsonRunOption = False) -> None:
    """Train the supervised similarity (Deep Ranking) and rebuild the supervised index."""
    start_early()  # Prefect's server boots while the checks below run
    settings = preflight(parameters=parameters, check_database=True).settings

    import flows.train_triplets

    with flow_run(console):
        run = flows.train_triplets.train_triplets(
            **parameters.resolved(settings).arguments()
        ).as_dict()
    if as_json:
        print_json(run)
        return
    from tiefvision_cli.report import print_similarity_run

    print_similarity_run(console, run)
