"""The catalog's commands: ``synth`` (a synthetic catalog), ``ingest`` (photos into the
manifest) and ``encode`` (the manifest's photos into feature maps)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tiefvision_cli.commands import console, print_json
from tiefvision_cli.options import (
    BackendOption,
    BatchSizeOption,
    DeviceOption,
    EncoderOption,
    JsonSummaryOption,
    MetadataOption,
    SourceOption,
    StoreOption,
    VerifyHashesOption,
    WeightsOption,
)
from tiefvision_cli.prefect_server import flow_run, start_early
from tiefvision_cli.preflight import preflight
from tiefvision_core.errors import ConfigError, one_of

if TYPE_CHECKING:
    from tiefvision_core.catalog.ingest import IngestSummary
    from tiefvision_core.encoding.shards import VectorDType

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


def ingest(
    images: SourceOption,
    store: StoreOption = None,
    metadata: MetadataOption = None,
    verify_hashes: VerifyHashesOption = False,
    follow_symlinks: Annotated[
        bool | None,
        typer.Option(
            "--follow-symlinks/--no-follow-symlinks",
            help="Read files that links lead to outside the folder (default: "
            "TIEFVISION_FOLLOW_SYMLINKS, off: such links are rejects, never read).",
        ),
    ] = None,
    as_json: JsonSummaryOption = False,
) -> None:
    """Ingest a folder or S3 prefix of photos into the catalog manifest (incremental)."""
    from tiefvision_cli.report import print_ingest_summary

    summary = run_ingest(images, store, metadata, verify_hashes, follow_symlinks)
    if as_json:
        print_json(summary.as_dict())
    else:
        print_ingest_summary(console, summary)


def run_ingest(
    images: str,
    store: str | None,
    metadata: Path | None,
    verify_hashes: bool = False,
    follow_symlinks: bool | None = None,
) -> IngestSummary:
    """The ingest flow after the checks (also the demo's first step)."""
    start_early()  # Prefect's server boots while the checks below run
    settings = preflight(
        store=store, images=images, metadata=metadata, follow_symlinks=follow_symlinks
    ).settings

    import flows.ingest

    with flow_run():
        return flows.ingest.ingest(
            images=images,
            store=settings.store_url,
            metadata=str(metadata) if metadata else None,
            verify_hashes=verify_hashes,
            follow_symlinks=settings.follow_symlinks,
        )


#: What --dtype accepts (spelled here: importing the encoding modules loads torch).
_VECTOR_DTYPES: tuple[VectorDType, ...] = ("float16", "float32")


def encode(
    store: StoreOption = None,
    encoder: EncoderOption = None,
    weights: WeightsOption = "default",
    device: DeviceOption = None,
    batch_size: BatchSizeOption = None,
    backend: BackendOption = None,
    shard_size: Annotated[int, typer.Option(min=1, help="Images per Parquet shard.")] = 256,
    flips: Annotated[bool, typer.Option(help="Also encode each crop mirrored.")] = False,
    dtype: Annotated[str, typer.Option(help="float16 or float32 vectors.")] = "float16",
    as_json: JsonSummaryOption = False,
) -> None:
    """Encode catalog images with a pretrained CNN into Parquet shards (incremental)."""
    vector_dtype = one_of(dtype, _VECTOR_DTYPES)
    if vector_dtype is None:
        raise ConfigError(f"--dtype {dtype!r}: choose float16 or float32")
    checked = preflight(
        store=store,
        encoder=encoder,
        device=device,
        batch_size=batch_size,
        backend=backend,
        check_device=True,
        weights=weights,
    )
    settings = checked.settings

    from flows._runtime import runtime_config
    from tiefvision_cli.report import print_encode_summary
    from tiefvision_core.encoding.encode import idle_summary
    from tiefvision_core.encoding.runtime import shared_runtime

    # The flow's tasks run in this process and reuse this runtime and its encoding processes.
    flow_args = (settings.store_url, settings.encoder, weights, settings.device)
    config = runtime_config(*flow_args, settings.batch_size, backend=settings.backend)[1]
    runtime = shared_runtime(config)
    summary = idle_summary(
        checked.store, runtime, shard_size=shard_size, flips=flips, dtype=vector_dtype
    )
    if summary is None:  # new work: run the flow (nothing new: no orchestrator to start)
        start_early()  # Prefect's server boots while the encoding processes do

        import flows.encode
        from tasks.encoding import prestart

        prestart(config)
        with flow_run(console, progress=not as_json):
            summary = flows.encode.encode(
                store=settings.store_url,
                encoder=settings.encoder,
                weights=weights,
                device=settings.device,
                batch_size=settings.batch_size,
                shard_size=shard_size,
                flips=flips,
                dtype=vector_dtype,
                backend=settings.backend,
            )
    if as_json:
        print_json(summary.as_dict())
    else:
        print_encode_summary(console, summary)
