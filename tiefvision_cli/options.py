"""Option types shared by the ``tiefvision`` commands: one declaration and help text each,
so ``--store`` or ``--lock-timeout`` reads the same in every command that takes it. The
default stays with each command (``--lock-timeout`` waits 600 s in a rebuild, 60 s in
``index use``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "AllowRegressionOption",
    "BackendOption",
    "BatchSizeOption",
    "DatabaseOption",
    "DeviceOption",
    "EncoderOption",
    "JsonOption",
    "JsonReportOption",
    "JsonRunOption",
    "JsonSummaryOption",
    "LockTimeoutOption",
    "LockTtlOption",
    "MaxEpochsOption",
    "MetadataOption",
    "SourceOption",
    "SpaceOption",
    "SpacesOption",
    "StoreOption",
    "StrictOption",
    "ToleranceOption",
    "VerifyHashesOption",
    "WeightsOption",
]

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Storage root: file:///dir or s3://bucket/prefix "
        "(default: $TIEFVISION_STORE_URL, else the embedded local store).",
    ),
]
SourceOption = Annotated[str, typer.Option("--images", help="Folder or s3://bucket/prefix.")]
MetadataOption = Annotated[
    Path | None, typer.Option(help="CSV/Parquet with product_id, category… per image.")
]
EncoderOption = Annotated[
    str | None,
    typer.Option(help="Encoder name (default: $TIEFVISION_ENCODER, efficientnet_lite0)."),
]
WeightsOption = Annotated[
    str,
    typer.Option(
        help="Encoder weights: default (pretrained, offline), none (random, on purpose), "
        "or a .pth path."
    ),
]
DeviceOption = Annotated[str | None, typer.Option(help="auto, cpu or cuda.")]
BatchSizeOption = Annotated[
    int | None,
    typer.Option(min=1, help="Images per forward pass (default: measured per device)."),
]
BackendOption = Annotated[
    str | None,
    typer.Option(
        help="CPU forward pass: auto (the faster of torch and onnxruntime, measured once per "
        "machine), torch or onnxruntime (default: $TIEFVISION_BACKEND, else auto)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
JsonSummaryOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
JsonReportOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
JsonRunOption = Annotated[bool, typer.Option("--json", help="Print the run as JSON.")]
SpaceOption = Annotated[str, typer.Option(help="unsupervised or supervised.")]
SpacesOption = Annotated[
    str | None, typer.Option(help="unsupervised or supervised (default: both).")
]
MaxEpochsOption = Annotated[int, typer.Option(min=1, help="Upper bound on epochs.")]
LockTimeoutOption = Annotated[
    float, typer.Option(min=0, help="Seconds to wait for a reindex or rebuild running.")
]
LockTtlOption = Annotated[
    float,
    typer.Option(min=1, help="Seconds without a heartbeat after which a holder is dead."),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="Annotations database: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB "
        "(default: $TIEFVISION_DATABASE_URL, else annotations.sqlite under a local store).",
    ),
]
StrictOption = Annotated[
    bool, typer.Option(help="Exit with code 1 when any row was refused (the rest is imported).")
]
VerifyHashesOption = Annotated[
    bool, typer.Option(help="Re-hash every image, even when size and mtime are unchanged.")
]
ToleranceOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        help="mAP@10 a new index version may lose against the live one and still go live "
        "(default: $TIEFVISION_REGRESSION_TOLERANCE, else 0.02).",
    ),
]
AllowRegressionOption = Annotated[
    bool,
    typer.Option(
        "--allow-regression",
        help="Let a new index version go live even when its mAP@10 drops beyond the tolerance.",
    ),
]
