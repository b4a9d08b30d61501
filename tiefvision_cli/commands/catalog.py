"""The catalog's commands: ``synth`` (a synthetic catalog), ``ingest`` (photos into the
manifest) and ``encode`` (the manifest's photos into feature maps)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tiefvision_cli.commands import console, print_json
from tiefvision_cli.options import JsonSummaryOption
from tiefvision_cli.parameters import stage_options
from tiefvision_cli.prefect_server import flow_run, start_early
from tiefvision_cli.preflight import preflight
from tiefvision_core.parameters.stages import EncodeParameters, IngestParameters

if TYPE_CHECKING:
    from tiefvision_core.catalog.ingest import IngestSummary

__all__ = ["encode", "ingest", "run_ingest", "synth"]


def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the catalog into.")],
    products: Annotated[int, typer.Option(min=1, help="Number of products.")] = 24,
    views: Annotated[int, typer.Option(min=1, help="Photos per product.")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
) -> None:
    """Generate a synthetic catalog of studio-style product photos with true boxes."""
    from tiefvision_core.catalog.synthetic import generate_catalog

    images = generate_catalog(out, products=products, views=views, seed=seed)
    console.print(f"Wrote {len(images)} images of {products} products to {out}")


@stage_options(IngestParameters)
def ingest(parameters: IngestParameters, as_json: JsonSummaryOption = False) -> None:
    """Ingest a folder or S3 prefix of photos into the catalog manifest (incremental)."""
    from tiefvision_cli.report import print_ingest_summary

    summary = run_ingest(parameters)
    if as_json:
        print_json(summary.as_dict())
    else:
        print_ingest_summary(console, summary)


def run_ingest(parameters: IngestParameters) -> IngestSummary:
    """The ingest flow after the checks (also the demo's first step)."""
    start_early()  # Prefect's server boots while the checks below run
    metadata = Path(parameters.metadata) if parameters.metadata else None
    settings = preflight(
        parameters=parameters, images=parameters.images, metadata=metadata
    ).settings

    import flows.ingest

    with flow_run():
        return flows.ingest.ingest(**parameters.resolved(settings).arguments())


@stage_options(EncodeParameters)
def encode(parameters: EncodeParameters, as_json: JsonSummaryOption = False) -> None:
    """Encode catalog images with a pretrained CNN into Parquet shards (incremental)."""
    checked = preflight(parameters=parameters, check_device=True, weights=parameters.weights)
    given = parameters.resolved(checked.settings)

    from flows._runtime import runtime_config
    from tiefvision_cli.report import print_encode_summary
    from tiefvision_core.encoding.encode import idle_summary
    from tiefvision_core.encoding.runtime import shared_runtime

    # The flow's tasks run in this process and reuse this runtime and its encoding processes.
    config = runtime_config(given)[1]
    runtime = shared_runtime(config)
    summary = idle_summary(
        checked.store,
        runtime,
        kind=given.kind,
        shard_size=given.shard_size,
        flips=given.flips,
        dtype=given.dtype,
    )
    if summary is None:  # new work: run the flow (nothing new: no orchestrator to start)
        start_early()  # Prefect's server boots while the encoding processes do

        import flows.encode
        from tasks.encoding import prestart

        prestart(config)
        with flow_run(console, progress=not as_json):
            summary = flows.encode.encode(**given.arguments())
    if as_json:
        print_json(summary.as_dict())
    else:
        print_encode_summary(console, summary)
