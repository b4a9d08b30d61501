"""The locator's commands: ``train-locator`` (a flow) and ``locate``: one photo's box (a
query, no flow) or every catalog photo's (a flow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tiefvision_cli.commands import console, print_json
from tiefvision_cli.options import JsonOption, JsonRunOption
from tiefvision_cli.parameters import stage_options
from tiefvision_cli.prefect_server import flow_run, start_early
from tiefvision_cli.preflight import preflight
from tiefvision_core.parameters.stages import LocateParameters, TrainLocatorParameters

__all__ = ["locate", "train_locator"]


@stage_options(TrainLocatorParameters)
def train_locator(parameters: TrainLocatorParameters, as_json: JsonRunOption = False) -> None:
    """Train the product locator on the annotated photos (builds the crops dataset)."""
    start_early()  # Prefect's server boots while the checks below run
    settings = preflight(
        parameters=parameters,
        check_database=True,
        check_device=True,
        weights=parameters.weights,
    ).settings

    import flows.train_locator
    from tiefvision_cli.report import print_locator_run

    with flow_run(console, progress=not as_json):
        run = flows.train_locator.train_locator(**parameters.resolved(settings).arguments())
    if as_json:
        print_json(run.as_dict())
    else:
        print_locator_run(console, run)


@stage_options(LocateParameters)
def locate(
    parameters: LocateParameters,
    image: Annotated[
        Path | None,
        typer.Argument(help="A photo to locate the product in; none = the whole catalog."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Locate the product: in one photo (prints its box) or in every catalog photo."""
    if image is not None:  # a query: no flow, so no Prefect server either
        _locate_one(image, parameters, as_json=as_json)
        return
    start_early()  # Prefect's server boots while the checks below run
    settings = preflight(
        parameters=parameters, check_device=True, weights=parameters.weights
    ).settings

    import flows.locate
    from tiefvision_cli.report import print_locate_summary

    with flow_run(console, progress=not as_json):
        summary = flows.locate.locate(**parameters.resolved(settings).arguments())
    if as_json:
        print_json(summary.as_dict())
    else:
        print_locate_summary(console, summary)


def _locate_one(image: Path, parameters: LocateParameters, *, as_json: bool) -> None:
    """One photo's box with the locator, printed (``--json``: box, score, fallback,
    low_confidence)."""
    from tiefvision_core.catalog.imaging import decode_photo
    from tiefvision_core.errors import InputError
    from tiefvision_core.locator.locate import locate_image
    from tiefvision_core.locator.model_files import load_locator

    checked = preflight(parameters=parameters, check_device=True, weights=parameters.weights)
    if not image.is_file():
        raise InputError(f"image {image} does not exist: check the path")
    encoder_model = checked.encoder
    assert encoder_model is not None  # built because weights were given
    model = load_locator(checked.store, parameters.locator, encoder_version=encoder_model.version)
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
        print_json({k: data[k] for k in keys})
    else:
        from tiefvision_cli.report import print_located

        print_located(console, image, located, model.version)
