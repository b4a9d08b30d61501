"""The annotation files' commands: ``import-boxes`` and ``import-triplets`` (boxes and
triplets from CSV or COCO files into the annotations database, no flow run)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from tiefvision_cli.commands import console, print_json
from tiefvision_cli.options import DatabaseOption, JsonReportOption, StoreOption, StrictOption
from tiefvision_cli.preflight import preflight

if TYPE_CHECKING:
    from tiefvision_core.annotations.repository import ImportReport

__all__ = ["import_boxes", "import_triplets", "print_import_report", "run_import"]


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
    as_json: JsonReportOption = False,
) -> None:
    """Import product bounding boxes (one per image; a new box replaces the old one)."""
    print_import_report(run_import("boxes", file, store, database), as_json, strict)


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
    as_json: JsonReportOption = False,
) -> None:
    """Import similarity triplets for supervised (Deep Ranking) training."""
    print_import_report(run_import("triplets", file, store, database), as_json, strict)


def run_import(
    kind: Literal["boxes", "triplets"], file: Path, store: str | None, database: str | None
) -> ImportReport:
    """Import one file into the annotations database, after cheap checks that fail fast:
    the file, the settings and database URL (an S3 store needs one), the catalog."""
    from tiefvision_core.annotations.files import NO_CATALOG
    from tiefvision_core.annotations.repository import open_annotations
    from tiefvision_core.catalog.manifest import read_manifest
    from tiefvision_core.errors import InputError

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


def print_import_report(report: ImportReport, as_json: bool, strict: bool) -> None:
    """The report (text or JSON); with strict, refused rows make exit code 1."""
    if as_json:
        print_json(report.as_dict())
    else:
        from tiefvision_cli.report import print_lines

        print_lines(console, report.format())
    if strict and report.refused:
        raise typer.Exit(1)
