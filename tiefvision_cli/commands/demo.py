"""``demo``: the main job end to end, on a synthetic catalog (with half of its boxes
annotated, the other half scoring the locator) or on a folder of the user's photos. What it
adds around the flows lives in :mod:`tiefvision_cli.demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tiefvision_cli.commands import console
from tiefvision_cli.commands.annotation_files import print_import_report, run_import
from tiefvision_cli.commands.catalog import run_ingest
from tiefvision_cli.commands.evaluate import run_evaluate
from tiefvision_cli.options import StoreOption
from tiefvision_cli.prefect_server import flow_run, start_early
from tiefvision_cli.preflight import preflight
from tiefvision_core.parameters.stages import IngestParameters, PipelineParameters

__all__ = ["demo"]


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
        run_ingest(IngestParameters(images=images, store=store, metadata=str(metadata)))
        from tiefvision_cli.demo import annotated_half

        boxes_csv, annotated = annotated_half(catalog_dir)
        print_import_report(run_import("boxes", boxes_csv, store, None), False, False)
    console.print(
        "Running the pipeline flow: ingest → encode → train locator → locate → index → "
        "Deep Ranking (stages without enough annotations are skipped, with the reason) …"
    )
    from flows.pipeline import pipeline

    given = PipelineParameters(
        images=images, store=store, metadata=str(metadata) if metadata else None
    )
    with flow_run(console):
        run = pipeline(**given.arguments())
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

    print_evaluation(console, run_evaluate(store))
    console.print(
        f"Web UI: tiefvision serve --store {store}  then open http://127.0.0.1:8000/",
        markup=False,
        soft_wrap=True,
    )


def _demo_search(store: str, workdir: Path, *, supervised: bool = True) -> None:
    """Retrieval scores side by side (when the catalog has product ids) and an HTML report
    of searches in the best space."""
    from tiefvision_cli.report import print_retrieval
    from tiefvision_core.catalog.manifest import read_manifest
    from tiefvision_core.encoders import get_encoder
    from tiefvision_core.index.report import compare_spaces, search_report_html
    from tiefvision_core.vector_index.versions import open_index

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
