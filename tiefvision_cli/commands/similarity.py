"""``train-triplets``: the supervised similarity (Deep Ranking) and its index (a flow)."""

from __future__ import annotations

from typing import Annotated

import typer

from tiefvision_cli.commands import console, print_json, secret
from tiefvision_cli.options import (
    DatabaseOption,
    DeviceOption,
    EncoderOption,
    JsonRunOption,
    MaxEpochsOption,
    StoreOption,
)
from tiefvision_cli.prefect_server import flow_run, start_early
from tiefvision_cli.preflight import preflight

__all__ = ["train_triplets"]


def train_triplets(
    store: StoreOption = None,
    database: DatabaseOption = None,
    encoder: EncoderOption = None,
    device: DeviceOption = None,
    margin: Annotated[float, typer.Option(min=0.001, max=2.0, help="Hinge-loss margin.")] = 0.1,
    max_epochs: MaxEpochsOption = 30,
    as_json: JsonRunOption = False,
) -> None:
    """Train the supervised similarity (Deep Ranking) and rebuild the supervised index."""
    start_early()  # Prefect's server boots while the checks below run
    settings = preflight(
        store=store, database=database, check_database=True, encoder=encoder, device=device
    ).settings

    import flows.train_triplets

    with flow_run(console):
        run = flows.train_triplets.train_triplets(
            store=settings.store_url,
            database=secret(database),
            encoder=settings.encoder,
            device=settings.device,
            margin=margin,
            max_epochs=max_epochs,
        ).as_dict()
    if as_json:
        print_json(run)
        return
    from tiefvision_cli.report import print_similarity_run

    print_similarity_run(console, run)
