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
from rich.markup import escape

from tiefvision_cli.options import (
    AllowRegressionOption,
    BackendOption,
    BatchSizeOption,
    DatabaseOption,
    DeviceOption,
    EncoderOption,
    JsonOption,
    LockTimeoutOption,
    LockTtlOption,
    MetadataOption,
    SourceOption,
    StoreOption,
    StrictOption,
    ToleranceOption,
    VerifyHashesOption,
    WeightsOption,
)
from tiefvision_cli.prefect_server import (
    first_word,
    flow_run,
    start_early,
    start_early_for,
)
from tiefvision_cli.preflight import preflight
from tiefvision_core.errors import ConfigError, TiefVisionError, one_of
from tiefvision_core.index.kinds import check_index_kind, spelled_choices

if TYPE_CHECKING:
    from tiefvision_core.annotations.store import ImportReport
    from tiefvision_core.catalog.ingest import IngestSummary
    from tiefvision_core.encoding.catalog import EncodeSummary
    from tiefvision_core.encoding.shards import VectorDType
    from tiefvision_core.evaluate import EvaluationReport
    from tiefvision_core.locator.runs import LocatorRun
    from tiefvision_core.locator.store import LocateSummary
    from tiefvision_core.reindex import ReindexSummary

# Without PREFECT_API_URL each command starts Prefect's temporary server, which gets 20 s by
# default: a busy 2-core machine (a test run, an encoding beside it) can take longer, and
# the command then dies before doing anything. Read when prefect is imported (lazily, later).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

app = typer.Typer(
    name="tiefvision",
    help="TiefVision: visual search for product catalogs, run as Prefect flows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

_state = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")] = False,
) -> None:
    _state["debug"] = debug
    if not verbose:
        _quiet_prefect_console()


def _quiet_prefect_console() -> None:
    """Quiet the terminal only: the Prefect API (and so the UI) still gets every log line,
    and a failing run's traceback goes there, not over the user's one-line error. Read when
    Prefect is imported, so set before :func:`start_early_for` imports it."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


@app.command()
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


@app.command()
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
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Ingest a folder or S3 prefix of photos into the catalog manifest (incremental)."""
    from tiefvision_cli.report import print_ingest_summary

    summary = _run_ingest(images, store, metadata, verify_hashes, follow_symlinks)
    if as_json:
        print(json.dumps(summary.as_dict()))
    else:
        print_ingest_summary(console, summary)


def _run_ingest(
    images: str,
    store: str | None,
    metadata: Path | None,
    verify_hashes: bool = False,
    follow_symlinks: bool | None = None,
) -> IngestSummary:
    start_early()  # Prefect's server boots while the checks below run
    settings = preflight(
        store=store, images=images, metadata=metadata, follow_symlinks=follow_symlinks
    ).settings

    from flows.ingest import ingest as ingest_flow

    with flow_run():
        return ingest_flow(
            images=images,
            store=settings.store_url,
            metadata=str(metadata) if metadata else None,
            verify_hashes=verify_hashes,
            follow_symlinks=settings.follow_symlinks,
        )


@app.command()
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
        backend=backend,
        shard_size=shard_size,
        flips=flips,
        dtype=dtype,
        progress=not as_json,
    )
    if as_json:
        print(json.dumps(summary.as_dict()))
    else:
        print_encode_summary(console, summary)


#: What --dtype accepts (spelled here: importing the encoding modules loads torch).
_VECTOR_DTYPES: tuple[VectorDType, ...] = ("float16", "float32")


def _run_encode(
    store: str | None,
    *,
    encoder: str | None = None,
    weights: str = "default",
    device: str | None = None,
    batch_size: int | None = None,
    backend: str | None = None,
    shard_size: int = 256,
    flips: bool = False,
    dtype: str = "float16",
    progress: bool = True,
) -> EncodeSummary:
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
    from tiefvision_core.encoding.catalog import idle_summary
    from tiefvision_core.encoding.runtime import shared_runtime

    # The flow's tasks run in this process and reuse this runtime and its encoding processes.
    flow_args = (settings.store_url, settings.encoder, weights, settings.device)
    config = runtime_config(*flow_args, settings.batch_size, backend=settings.backend)[1]
    runtime = shared_runtime(config)
    idle = idle_summary(
        checked.store, runtime, shard_size=shard_size, flips=flips, dtype=vector_dtype
    )
    if idle is not None:  # nothing new: no flow run, so no orchestrator to start
        return idle
    start_early()  # Prefect's server boots while the encoding processes do

    from flows.encode import encode as encode_flow
    from tasks.encoding import prestart

    prestart(config)
    with flow_run(console, progress=progress):
        return encode_flow(
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
    start_early()
    from tiefvision_core.catalog.synthetic import generate_catalog

    workdir = workdir.resolve()
    store = store or (workdir / "store").as_uri()
    metadata = None
    catalog_dir = None
    if images is None:
        catalog_dir = workdir / "catalog"
        console.print(f"Generating a synthetic catalog in {catalog_dir} …")
        generate_catalog(catalog_dir, products=products, views=views, seed=0)
        images, metadata = str(catalog_dir / "images"), catalog_dir / "products.csv"
        console.print(f"Ingesting {images} and annotating the boxes of half the products …")
        _run_ingest(images, store, metadata)
        from tiefvision_cli.demo import annotated_half

        boxes_csv, annotated = annotated_half(catalog_dir)
        _print_import_report(_run_import("boxes", boxes_csv, store, None), False, False)
    console.print(
        "Running the pipeline flow: ingest → encode → train locator → locate → index → "
        "Deep Ranking (stages without enough annotations are skipped, with the reason) …"
    )
    from flows.pipeline import pipeline

    with flow_run(console):
        run = pipeline(images=images, store=store, metadata=str(metadata) if metadata else None)
    from tiefvision_cli.report import print_box_scores, print_pipeline

    print_pipeline(console, run)
    if catalog_dir is not None and run.locator is not None:
        from tiefvision_cli.demo import score_located

        target = preflight(store=store).store
        evaluation = score_located(target, run.locator.version, catalog_dir, annotated)
        print_box_scores(
            console,
            f"Never-annotated photos ({evaluation.images}): located boxes vs baselines",
            evaluation.table(),
        )
    _demo_search(store, workdir, supervised=run.similarity is not None)
    from tiefvision_cli.report import print_evaluation

    print_evaluation(console, _run_evaluate(store))
    console.print(
        f"Web UI: tiefvision serve --store {store}  then open http://127.0.0.1:8000/",
        markup=False,
        soft_wrap=True,
    )


def _demo_search(store: str, workdir: Path, *, supervised: bool = True) -> None:
    """Retrieval scores side by side (when the catalog has product ids) and an HTML report
    of searches in the best space."""
    from tiefvision_cli.report import print_retrieval
    from tiefvision_core.catalog.ingest import read_manifest
    from tiefvision_core.encoders import get_encoder
    from tiefvision_core.index.report import compare_spaces, search_report_html
    from tiefvision_core.index.versions import open_index

    checked = preflight(store=store)
    target = checked.store
    manifest = read_manifest(target)
    if manifest is not None and "product_id" in manifest.column_names:
        print_retrieval(console, compare_spaces(target, get_encoder("efficientnet_lite0")))
    else:
        console.print("No product_id column (--metadata): retrieval scores skipped.")
    report = workdir / "search-report.html"
    space = "supervised" if supervised else "unsupervised"
    report.write_text(
        search_report_html(
            target,
            open_index(target, space),
            title="TiefVision demo",
            max_bytes=checked.settings.max_image_bytes,
            max_pixels=checked.settings.max_image_pixels,
        )
    )
    console.print(f"Search report (queries and their top results): {report}")


@app.command("import-boxes")
def import_boxes(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV image,left,top,right,bottom (image: image_id or path relative to the "
            "ingested folder; pixels of the image as shown) or COCO JSON.",
        ),
    ],
    store: StoreOption = None,
    database: DatabaseOption = None,
    strict: StrictOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import product bounding boxes (one per image; a new box replaces the old one)."""
    _print_import_report(_run_import("boxes", file, store, database), as_json, strict)


@app.command("import-triplets")
def import_triplets(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV reference,positive,negative: positive is more similar to reference "
            "than negative (images by image_id or relative path).",
        ),
    ],
    store: StoreOption = None,
    database: DatabaseOption = None,
    strict: StrictOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import similarity triplets for supervised (Deep Ranking) training."""
    _print_import_report(_run_import("triplets", file, store, database), as_json, strict)


def _run_import(kind: str, file: Path, store: str | None, database: str | None) -> ImportReport:
    from tiefvision_core.annotations.files import NO_CATALOG
    from tiefvision_core.annotations.store import open_annotations
    from tiefvision_core.catalog.ingest import read_manifest
    from tiefvision_core.errors import InputError

    # Fail fast and cheaply: the file, settings and database URL (S3 needs one), the catalog.
    if not file.is_file():
        raise InputError(f"{kind} file {file} does not exist: check the path")
    checked = preflight(store=store, database=database, check_database=True)
    manifest = read_manifest(checked.store)
    if manifest is None:
        raise InputError(f"{checked.settings.store_url}: {NO_CATALOG}")
    with open_annotations(checked.settings) as annotations:
        if kind == "boxes":
            return annotations.import_boxes(file, manifest)
        return annotations.import_triplets(file, manifest)


def _print_import_report(report: ImportReport, as_json: bool, strict: bool) -> None:
    """The report (text or JSON); ``--strict`` turns refused rows into exit code 1."""
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        from tiefvision_cli.report import print_lines

        print_lines(console, report.format())
    if strict and report.refused:
        raise typer.Exit(1)


@app.command("train-locator")
def train_locator(
    store: StoreOption = None,
    database: DatabaseOption = None,
    encoder: EncoderOption = None,
    weights: WeightsOption = ("default"),
    device: DeviceOption = None,
    threshold: Annotated[
        float, typer.Option(min=0.01, max=0.99, help="P(object) a position needs to count.")
    ] = 0.8,
    max_epochs: Annotated[int, typer.Option(min=1, help="Upper bound on epochs.")] = 40,
    min_images: Annotated[int, typer.Option(min=2, help="Fewest annotated photos.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
) -> None:
    """Train the product locator on the annotated photos (builds the crops dataset)."""
    from tiefvision_cli.report import print_locator_run

    run = _run_train_locator(
        store,
        database=database,
        encoder=encoder,
        weights=weights,
        device=device,
        threshold=threshold,
        max_epochs=max_epochs,
        min_images=min_images,
        progress=not as_json,
    )
    if as_json:
        print(json.dumps(run.as_dict()))
    else:
        print_locator_run(console, run)


def _run_train_locator(
    store: str | None,
    *,
    database: str | None = None,
    encoder: str | None = None,
    weights: str = "default",
    device: str | None = None,
    threshold: float = 0.8,
    max_epochs: int = 40,
    min_images: int = 20,
    progress: bool = True,
) -> LocatorRun:
    start_early()  # Prefect's server boots while the checks below run
    settings = preflight(
        store=store,
        database=database,
        check_database=True,
        encoder=encoder,
        device=device,
        check_device=True,
        weights=weights,
    ).settings
    if database:  # the flow reads it from the environment: never a (logged) parameter
        os.environ["TIEFVISION_DATABASE_URL"] = database

    from flows.train_locator import train_locator as train_flow

    with flow_run(console, progress=progress):
        run = train_flow(
            store=settings.store_url,
            encoder=settings.encoder,
            weights=weights,
            device=settings.device,
            threshold=threshold,
            max_epochs=max_epochs,
            min_images=min_images,
        )
    return run


@app.command()
def locate(
    image: Annotated[
        Path | None,
        typer.Argument(help="A photo to locate the product in; none = the whole catalog."),
    ] = None,
    store: StoreOption = None,
    encoder: EncoderOption = None,
    weights: WeightsOption = ("default"),
    device: DeviceOption = None,
    locator: Annotated[
        str | None, typer.Option(help="Locator version (default: the current one).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Locate the product: in one photo (prints its box) or in every catalog photo."""
    if image is not None:  # a query: no flow, so no Prefect server either
        _locate_one(image, store, encoder=encoder, weights=weights, device=device,
                    locator=locator, as_json=as_json)  # fmt: skip
        return
    from tiefvision_cli.report import print_locate_summary

    summary = _run_locate(
        store, encoder=encoder, weights=weights, device=device, locator=locator,
        progress=not as_json,
    )  # fmt: skip
    if as_json:
        print(json.dumps(summary.as_dict()))
    else:
        print_locate_summary(console, summary)


def _locate_one(
    image: Path,
    store: str | None,
    *,
    encoder: str | None,
    weights: str,
    device: str | None,
    locator: str | None,
    as_json: bool,
) -> None:
    """One photo's box with the locator, printed (``--json``: box, score, fallback,
    low_confidence)."""
    from tiefvision_core.catalog.imaging import decode_photo
    from tiefvision_core.errors import InputError
    from tiefvision_core.locator.store import load_locator, locate_image

    checked = preflight(
        store=store, encoder=encoder, device=device, check_device=True, weights=weights
    )
    if not image.is_file():
        raise InputError(f"image {image} does not exist: check the path")
    encoder_model = checked.encoder
    assert encoder_model is not None  # built because weights were given
    model = load_locator(checked.store, locator, encoder_version=encoder_model.version)
    # Decoded as an upload is: within the configured pixel limit, at the smallest JPEG
    # scale the locator's largest side needs; the box is in the photo's own pixels.
    photo = decode_photo(
        image.read_bytes(),
        max_pixels=checked.settings.max_image_pixels,
        min_longer_side=max(model.scales),
    )
    size = (photo.info.width, photo.info.height)
    located = locate_image(model, encoder_model, photo.image, size=size)
    if as_json:
        data = located.as_dict()
        keys = ("box", "score", "fallback", "low_confidence")
        print(json.dumps({k: data[k] for k in keys}))
    else:
        from tiefvision_cli.report import print_located

        print_located(console, image, located, model.version)


def _run_locate(
    store: str | None,
    *,
    encoder: str | None = None,
    weights: str = "default",
    device: str | None = None,
    locator: str | None = None,
    progress: bool = True,
) -> LocateSummary:
    start_early()  # Prefect's server boots while the checks below run
    settings = preflight(
        store=store, encoder=encoder, device=device, check_device=True, weights=weights
    ).settings

    from flows.locate import locate as locate_flow

    with flow_run(console, progress=progress):
        return locate_flow(
            store=settings.store_url,
            encoder=settings.encoder,
            weights=weights,
            device=settings.device,
            locator=locator,
        )


@app.command()
def evaluate(
    store: StoreOption = None,
    space: Annotated[
        str | None, typer.Option(help="unsupervised or supervised (default: both).")
    ] = None,
    history: Annotated[
        bool,
        typer.Option(
            "--history",
            help="Show the trend instead: every version's stored scores, the live one marked.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Score what is live on held-out data: the locator's boxes (IoU vs baselines) on
    annotated photos it did not train on, each index space's P@1/P@5/mAP@10 by product_id;
    the scores are written next to each version (evaluation.json). ``--history`` reads
    those files back for every version, oldest first, and computes nothing."""
    from tiefvision_core.index.versions import SPACES, check_space

    spaces: list[str] = list(SPACES) if space is None else [check_space(space)]
    if history:
        from tiefvision_core.evaluate import evaluation_history

        rows = evaluation_history(preflight(store=store).store, spaces, locator=space is None)
        if as_json:
            print(json.dumps({"history": rows}))
            return
        from tiefvision_cli.report import print_evaluation_history

        print_evaluation_history(console, rows)
        return
    report = _run_evaluate(store, spaces)
    if as_json:
        print(json.dumps(report.as_dict()))
        return
    from tiefvision_cli.report import print_evaluation

    print_evaluation(console, report)


def _run_evaluate(store: str | None, spaces: list[str] | None = None) -> EvaluationReport:
    start_early()  # Prefect's server boots while the store is checked
    settings = preflight(store=store).settings
    from flows.evaluate import evaluate as evaluate_flow

    with flow_run(console, progress=False):
        return evaluate_flow(store=settings.store_url, spaces=spaces)


@app.command("rebuild-index")
def rebuild_index(
    store: StoreOption = None,
    space: Annotated[str, typer.Option(help="unsupervised or supervised.")] = "unsupervised",
    encoder: EncoderOption = None,
    device: DeviceOption = None,
    index_kind: Annotated[str, typer.Option(help=f"{spelled_choices()} (compressed).")] = "auto",
    lock_timeout: LockTimeoutOption = 600.0,
    lock_ttl: LockTtlOption = 120.0,
    tolerance: ToleranceOption = None,
    allow_regression: AllowRegressionOption = False,
    as_json: JsonOption = False,
) -> None:
    """Encode the catalog's box crops (incremental) and publish a new index version (one
    rebuild or reindex at a time per store). It goes live only when its mAP@10 is no worse
    than the live version's beyond the tolerance (the regression gate)."""
    version = _run_rebuild_index(
        store,
        space=space,
        encoder=encoder,
        device=device,
        index_kind=index_kind,
        lock_timeout=lock_timeout,
        lock_ttl=lock_ttl,
        tolerance=tolerance,
        allow_regression=allow_regression,
    )
    if as_json:
        print(json.dumps(version))
        return
    from tiefvision_cli.report import print_index_version

    print_index_version(console, version)


def _run_rebuild_index(
    store: str | None,
    *,
    space: str = "unsupervised",
    encoder: str | None = None,
    device: str | None = None,
    index_kind: str = "auto",
    lock_timeout: float = 600.0,
    lock_ttl: float = 120.0,
    tolerance: float | None = None,
    allow_regression: bool = False,
) -> dict[str, object]:
    from tiefvision_core.index.versions import check_space

    start_early()  # Prefect's server boots while the checks below run
    settings = preflight(
        store=store, encoder=encoder, device=device, regression_tolerance=tolerance
    ).settings
    checked_space = check_space(space)
    kind = check_index_kind(index_kind)

    from flows.rebuild_index import rebuild_index as rebuild_flow

    with flow_run(console):
        version = rebuild_flow(
            store=settings.store_url,
            space=checked_space,
            encoder=settings.encoder,
            device=settings.device,
            index_kind=kind,
            lock_timeout=lock_timeout,
            lock_ttl=lock_ttl,
            tolerance=settings.regression_tolerance,
            allow_regression=allow_regression,
        )
    return version.as_dict()


@app.command()
def reindex(
    images: SourceOption,
    store: StoreOption = None,
    metadata: MetadataOption = None,
    encoder: EncoderOption = None,
    weights: WeightsOption = "default",
    device: DeviceOption = None,
    batch_size: BatchSizeOption = None,
    shard_size: Annotated[
        int, typer.Option(min=1, help="Photos per locate part and encoding shard.")
    ] = 256,
    index_kind: Annotated[
        str | None,
        typer.Option(help=f"{spelled_choices()} (default: keep each live index's kind)."),
    ] = None,
    max_churn: Annotated[
        float,
        typer.Option(
            min=0.001, help="Rebuild an ANN index when this share of its trained rows changed."
        ),
    ] = 0.2,
    max_growth: Annotated[
        float,
        typer.Option(min=1.001, help="Rebuild an ANN index when the catalog grew/shrank this ×."),
    ] = 2.0,
    lock_timeout: LockTimeoutOption = 600.0,
    lock_ttl: LockTtlOption = 120.0,
    verify_hashes: VerifyHashesOption = False,
    retention: Annotated[
        int | None,
        typer.Option(
            min=1, help="Versions the closing gc keeps per kind (default: $TIEFVISION_RETENTION)."
        ),
    ] = None,
    tolerance: ToleranceOption = None,
    allow_regression: AllowRegressionOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """The nightly incremental reindex: ingest, locate and encode what is new or changed,
    drop what was removed, update every live index (one run at a time per store). A new
    index version goes live only past the regression gate (mAP@10 against the live one)."""
    start_early()  # Prefect's server boots while the checks below run
    kind = None if index_kind is None else check_index_kind(index_kind)
    settings = preflight(
        store=store,
        images=images,
        metadata=metadata,
        encoder=encoder,
        device=device,
        batch_size=batch_size,
        regression_tolerance=tolerance,
    ).settings

    from flows.reindex import reindex as reindex_flow
    from tiefvision_core.reindex import ReindexRefused

    try:
        with flow_run(console, progress=not as_json):
            summary = reindex_flow(
                images=images,
                store=settings.store_url,
                metadata=str(metadata) if metadata else None,
                encoder=settings.encoder,
                weights=weights,
                device=settings.device,
                batch_size=settings.batch_size,
                shard_size=shard_size,
                index_kind=kind,
                max_churn=max_churn,
                max_growth=max_growth,
                lock_timeout=lock_timeout,
                lock_ttl=lock_ttl,
                verify_hashes=verify_hashes,
                retention=retention,
                tolerance=settings.regression_tolerance,
                allow_regression=allow_regression,
            )
    except ReindexRefused as refusal:  # the run's work is done: its summary still prints
        if refusal.summary is not None:
            _print_reindex(refusal.summary, as_json)
        raise
    _print_reindex(summary, as_json)


def _print_reindex(summary: ReindexSummary, as_json: bool) -> None:
    """The reindex summary on stdout: one JSON document with ``--json``, else the report."""
    if as_json:
        print(json.dumps(summary.as_dict()))
    else:
        from tiefvision_cli.report import print_reindex

        print_reindex(console, summary)


@app.command()
def search(
    image: Annotated[
        Path | None, typer.Argument(help="A photo to search with (or use --id).")
    ] = None,
    image_id: Annotated[
        str | None, typer.Option("--id", help="Search with a catalog photo's id.")
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=1000, help="Results.")] = 10,
    space: Annotated[str, typer.Option(help="unsupervised or supervised.")] = "unsupervised",
    where: Annotated[
        list[str] | None,
        typer.Option("--filter", help="Only results with COLUMN=VALUE (e.g. category=dress)."),
    ] = None,
    store: StoreOption = None,
    encoder: EncoderOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find the catalog photos most similar to a photo or to a catalog image id."""
    from tiefvision_core.catalog.live import read_live_catalog
    from tiefvision_core.index.search import search_by_id
    from tiefvision_core.index.versions import open_index

    if (image is None) == (image_id is None):
        raise ConfigError("give either a photo file or --id ID (not both)")
    filters = {}
    for item in where or []:
        column, sep, value = item.partition("=")
        if not sep or not column:
            raise ConfigError(f"--filter {item!r}: write COLUMN=VALUE, e.g. category=dress")
        filters[column] = value
    checked = preflight(store=store, encoder=encoder)
    settings, target = checked.settings, checked.store
    opened = open_index(target, space)
    live = read_live_catalog(target)  # removed photos stay out, whichever version is live
    if image_id is not None:
        result = search_by_id(opened, image_id, k=k, where=filters, live=live)
    else:
        from tiefvision_core.encoders import get_encoder
        from tiefvision_core.errors import InputError
        from tiefvision_core.index.photo_search import search_by_image

        assert image is not None  # exactly one of image and --id, checked above
        if not image.is_file():
            raise InputError(f"image {image} does not exist: check the path")
        result = search_by_image(
            target,
            opened,
            get_encoder(settings.encoder),
            image.read_bytes(),
            max_pixels=settings.max_image_pixels,
            k=k,
            where=filters,
            live=live,
        )
    if as_json:
        print(json.dumps(result.as_dict()))
        return
    from tiefvision_cli.report import print_search_result

    print_search_result(console, result)


@app.command("train-triplets")
def train_triplets(
    store: StoreOption = None,
    database: DatabaseOption = None,
    encoder: EncoderOption = None,
    device: DeviceOption = None,
    margin: Annotated[float, typer.Option(min=0.001, max=2.0, help="Hinge-loss margin.")] = 0.1,
    max_epochs: Annotated[int, typer.Option(min=1, help="Upper bound on epochs.")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
) -> None:
    """Train the supervised similarity (Deep Ranking) and rebuild the supervised index."""
    run = _run_train_triplets(
        store,
        database=database,
        encoder=encoder,
        device=device,
        margin=margin,
        max_epochs=max_epochs,
    )
    if as_json:
        print(json.dumps(run))
        return
    from tiefvision_cli.report import print_similarity_run

    print_similarity_run(console, run)


def _run_train_triplets(
    store: str | None,
    *,
    database: str | None = None,
    encoder: str | None = None,
    device: str | None = None,
    margin: float = 0.1,
    max_epochs: int = 30,
) -> dict[str, object]:
    start_early()  # Prefect's server boots while the checks below run
    settings = preflight(
        store=store, database=database, check_database=True, encoder=encoder, device=device
    ).settings
    if database:  # the flow reads it from the environment: never a (logged) parameter
        os.environ["TIEFVISION_DATABASE_URL"] = database

    from flows.train_triplets import train_triplets as train_flow

    with flow_run(console):
        run = train_flow(
            store=settings.store_url,
            encoder=settings.encoder,
            device=settings.device,
            margin=margin,
            max_epochs=max_epochs,
        )
    return run.as_dict()


@app.command("setup-prefect")
def setup_prefect(
    bucket: Annotated[
        str | None,
        typer.Option(help="S3 bucket for flow results (default: the bucket of an s3:// store)."),
    ] = None,
    folder: Annotated[str, typer.Option(help="Prefix of flow results in the bucket.")] = (
        "prefect-results"
    ),
    endpoint: Annotated[
        str | None,
        typer.Option(help="S3 endpoint, e.g. MinIO (default: $TIEFVISION_S3_ENDPOINT_URL)."),
    ] = None,
    gpu_pool_type: Annotated[
        str,
        typer.Option(
            help="kubernetes (one job with a GPU per flow run) or process (a worker that "
            "runs on a GPU host)."
        ),
    ] = "kubernetes",
    gpu_image: Annotated[
        str, typer.Option(help="Image of the GPU pool's Kubernetes jobs.")
    ] = "tiefvision:gpu",
    namespace: Annotated[str, typer.Option(help="Namespace of those jobs.")] = "tiefvision",
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was done as JSON.")] = False,
) -> None:
    """Create or update flow-result storage (S3 block) and the work pools on the Prefect
    server at $PREFECT_API_URL (idempotent)."""
    from deployments.setup import setup_prefect as setup

    if bucket is None:
        from tiefvision_core.config import load_settings

        store_url = load_settings(store_url=store).store_url
        if not store_url.startswith("s3://"):
            raise ConfigError(
                "flow results go to S3: give --bucket BUCKET, or use an s3:// store "
                "(TIEFVISION_STORE_URL=s3://BUCKET/PREFIX)"
            )
        bucket = store_url.removeprefix("s3://").split("/", 1)[0]
    done = setup(
        bucket=bucket,
        folder=folder,
        endpoint=endpoint,
        gpu_pool_type=gpu_pool_type,
        gpu_image=gpu_image,
        namespace=namespace,
    )
    if as_json:
        print(json.dumps(done))
        return
    from tiefvision_cli.report import print_setup_prefect

    print_setup_prefect(console, done)


@app.command()
def trigger(
    deployment: Annotated[
        str,
        typer.Argument(
            metavar="FLOW",
            help="Deployment: FLOW/NAME (reindex/nightly), or a flow with one deployment.",
        ),
    ],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="NAME=VALUE, repeatable; VALUE is read as JSON when it parses, else as text.",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the run to finish; exit 1 unless Completed.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="With --wait: stop waiting after SECONDS.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
) -> None:
    """Run a deployment on the Prefect server at $PREFECT_API_URL (a worker executes it)."""
    from tiefvision_cli.orchestration import trigger as start

    run = start(deployment, param or [], wait=wait, timeout=timeout)
    failed = wait and run.state != "COMPLETED"
    if as_json:
        print(json.dumps(run.as_dict()))
    else:
        from tiefvision_cli.report import print_triggered

        print_triggered(err_console if failed else console, run, waited=wait, failed=failed)
    if failed:
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    store: StoreOption = None,
    database: DatabaseOption = None,
) -> None:
    """Run the web service: search API (OpenAPI at /docs) and pages (gallery, search by
    photo, box and triplet editors, status)."""
    # The service's parallelism is its requests (a thread each). A multi-threaded OpenBLAS
    # turns the tiny per-query products (e.g. 9×1280 @ 1280×64 for an ANN index) into
    # spin-waits: 70-140 ms instead of < 1 ms on a busy 2-core machine. Set before numpy loads.
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import uvicorn

    from tiefvision_core.config import load_settings
    from tiefvision_web import create_app
    from tiefvision_web.read_deadline import read_deadline_protocol

    settings = load_settings(store_url=store, database_url=database)
    web_app = create_app(settings)  # opens the store: a wrong URL fails here, in one line
    if settings.api_token is None and not settings.production and host not in _LOOPBACK:
        err_console.print(
            f"warning: listening on {escape(host)} without TIEFVISION_API_TOKEN: anyone who "
            "can reach it can edit annotations and start flows",
            highlight=False,
        )
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    console.print(f"TiefVision web UI on http://{shown}:{port}/ (API docs: /docs)", markup=False)
    uvicorn.run(
        web_app,
        host=host,
        port=port,
        log_level="info",
        http=read_deadline_protocol(settings.request_read_timeout),
    )


_LOOPBACK = ("127.0.0.1", "localhost", "::1")

from tiefvision_cli.maintenance import gc, index_app  # noqa: E402  (after `app` exists)

app.add_typer(index_app, name="index")
app.command("gc")(gc)


def main() -> None:
    """Console-script entry point: user errors become one line and exit code 2; anything
    else one line naming the command, our stage and the exception type, and exit code 1.

    Usage errors (unknown option, missing argument) are handled by Typer itself (exit 2).
    """
    argv = sys.argv[1:]
    if not {"--verbose", "-v"} & set(argv[: first_word(argv)]):
        _quiet_prefect_console()
    try:
        start_early_for(argv)
        app()
    except TiefVisionError as error:
        if _state["debug"]:
            raise
        message = escape(str(error))
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as error:  # a bug or a case nobody checks for: one line, never its text
        if _state["debug"]:
            raise
        from tiefvision_cli.unexpected import unexpected_error_line

        at = first_word(argv)
        line = unexpected_error_line(argv[at] if at < len(argv) else None, error)
        err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
