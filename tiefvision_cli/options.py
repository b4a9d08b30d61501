"""Options of the commands that run no stage (``search``, ``index list|use``, ``serve``,
``import-boxes`` …), and ``--json``.

A stage command's options are derived from its stage's parameters model
(:mod:`tiefvision_cli.parameters`). Where a query command takes one of those parameters
too (``--store``, ``--encoder``, ``--database``, ``--lock-timeout``), its help is the
model field's, so it reads the same in every command; the default stays with each command
(``--lock-timeout`` waits 600 s in a rebuild, 60 s in ``index use``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from tiefvision_core.parameters.groups import (
    DatabaseParameters,
    EncoderParameters,
    LockParameters,
    StageParameters,
    StoreParameters,
)

__all__ = [
    "DatabaseOption",
    "EncoderOption",
    "JsonOption",
    "JsonReportOption",
    "JsonRunOption",
    "JsonSummaryOption",
    "LockTimeoutOption",
    "SpaceOption",
    "SpacesOption",
    "StoreOption",
    "StrictOption",
]


def _help(model: type[StageParameters], name: str) -> str:
    """The help of a stage parameter, from its model."""
    return model.model_fields[name].description or ""


StoreOption = Annotated[str | None, typer.Option("--store", help=_help(StoreParameters, "store"))]
EncoderOption = Annotated[str | None, typer.Option(help=_help(EncoderParameters, "encoder"))]
DatabaseOption = Annotated[
    str | None, typer.Option("--database", help=_help(DatabaseParameters, "database"))
]
LockTimeoutOption = Annotated[
    float, typer.Option(min=0, help=_help(LockParameters, "lock_timeout"))
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
JsonSummaryOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
JsonReportOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
JsonRunOption = Annotated[bool, typer.Option("--json", help="Print the run as JSON.")]
SpaceOption = Annotated[str, typer.Option(help="unsupervised or supervised.")]
SpacesOption = Annotated[
    str | None, typer.Option(help="unsupervised or supervised (default: both).")
]
StrictOption = Annotated[
    bool, typer.Option(help="Exit with code 1 when any row was refused (the rest is imported).")
]
