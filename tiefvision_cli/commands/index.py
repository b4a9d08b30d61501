"""The index's commands: ``rebuild-index`` and the nightly ``reindex`` (flows), ``search``
(a query, no flow) and ``index list|use`` (its versions).

Switching a version holds the store's reindex lock, so it never happens under a running
reindex or rebuild (which would publish meanwhile); the decisions live in
``tiefvision_core.vector_index.versions``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tiefvision_cli.commands import console, print_json, register
from tiefvision_cli.options import (
    EncoderOption,
    JsonOption,
    JsonSummaryOption,
    LockTimeoutOption,
    SpaceOption,
    SpacesOption,
    StoreOption,
)
from tiefvision_cli.parameters import stage_options
from tiefvision_cli.prefect_server import flow_run, start_early
from tiefvision_cli.preflight import preflight
from tiefvision_core.errors import ConfigError
from tiefvision_core.parameters.stages import RebuildIndexParameters, ReindexParameters

if TYPE_CHECKING:
    from tiefvision_core.pipeline.reindex import ReindexSummary
    from tiefvision_core.storage.stores import Store

__all__ = ["index_app", "rebuild_index", "reindex", "search"]


@stage_options(RebuildIndexParameters)
def rebuild_index(parameters: RebuildIndexParameters, as_json: JsonOption = False) -> None:
    """Encode the catalog's box crops (incremental) and publish a new index version.

    One rebuild or reindex runs at a time per store. The new version goes live only when
    its mAP@10 is no worse than the live version's beyond the tolerance (the regression
    gate).
    """
    start_early()  # Prefect's server boots while the checks below run
    settings = preflight(parameters=parameters).settings

    import flows.rebuild_index

    with flow_run(console):
        version = flows.rebuild_index.rebuild_index(**parameters.resolved(settings).arguments())
    published = version.as_dict()
    if as_json:
        print_json(published)
        return
    from tiefvision_cli.report import print_index_version

    print_index_version(console, published)


@stage_options(ReindexParameters)
def reindex(parameters: ReindexParameters, as_json: JsonSummaryOption = False) -> None:
    """The nightly incremental reindex, one run at a time per store.

    Ingest, locate and encode what is new or changed, drop what was removed, and update
    every live index. A new index version goes live only past the regression gate (its
    mAP@10 against the live one's).
    """
    start_early()  # Prefect's server boots while the checks below run
    metadata = parameters.metadata
    settings = preflight(
        parameters=parameters,
        images=parameters.images,
        metadata=Path(metadata) if metadata else None,
    ).settings

    import flows.reindex
    from tiefvision_core.pipeline.reindex import ReindexRefused

    try:
        with flow_run(console, progress=not as_json):
            summary = flows.reindex.reindex(**parameters.resolved(settings).arguments())
    except ReindexRefused as refusal:  # the run's work is done: its summary still prints
        if refusal.summary is not None:
            _print_reindex(refusal.summary, as_json)
        raise
    _print_reindex(summary, as_json)


def _print_reindex(summary: ReindexSummary, as_json: bool) -> None:
    """The reindex summary on stdout: one JSON document with ``--json``, else the report."""
    if as_json:
        print_json(summary.as_dict())
    else:
        from tiefvision_cli.report import print_reindex

        print_reindex(console, summary)


def search(
    image: Annotated[
        Path | None, typer.Argument(help="A photo to search with (or use --id).")
    ] = None,
    image_id: Annotated[
        str | None, typer.Option("--id", help="Search with a catalog photo's id.")
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=1000, help="Results.")] = 10,
    space: SpaceOption = "unsupervised",
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
    from tiefvision_core.vector_index.versions import open_index

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
        from tiefvision_core.index.search import search_by_image  # torch: loaded here only

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
        print_json(result.as_dict())
        return
    from tiefvision_cli.report import print_search_result

    print_search_result(console, result)


# -- index list|use --------------------------------------------------------------------------

index_app = typer.Typer(
    help="Index versions: list them, switch the live one back or forth.", no_args_is_help=True
)


@contextmanager
def _store_lock(store: Store, what: str, timeout_s: float) -> Iterator[None]:
    from tiefvision_core.pipeline.reindex import LOCK_NAME
    from tiefvision_core.storage.lock import StoreLock

    lock = StoreLock(store, LOCK_NAME, label=f"tiefvision {what} (pid {os.getpid()})")
    with lock.hold(timeout_s):
        yield


def index_list(
    store: StoreOption = None,
    space: SpacesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every version with its rows, bytes, creation time, self-check and which is live."""
    from tiefvision_cli.report import print_index_versions
    from tiefvision_core.vector_index.versions import SPACES, list_versions, space_prefix

    spaces = [space] if space else list(SPACES)
    for name in spaces:
        space_prefix(name)
    target = preflight(store=store).store
    listed = [info for name in spaces for info in list_versions(target, name)]
    if as_json:
        print_json([info.as_dict() for info in listed])
        return
    print_index_versions(console, listed)


def index_use(
    version: Annotated[str, typer.Argument(help="The version to make live (see index list).")],
    store: StoreOption = None,
    space: SpaceOption = "unsupervised",
    lock_timeout: LockTimeoutOption = 60.0,
    as_json: JsonOption = False,
) -> None:
    """Make VERSION the live index (roll back or forward).

    The version passes its self-check again first. CURRENT is switched atomically;
    readers pick it up on their next request.
    """
    from tiefvision_core.storage.layout import current_key
    from tiefvision_core.vector_index.versions import space_prefix, use_version

    space_prefix(space)
    target = preflight(store=store).store
    before = target.read_pointer(current_key(space_prefix(space)))
    with _store_lock(target, "index use", lock_timeout):
        info = use_version(target, space, version)
    if as_json:
        print_json({**info.as_dict(), "before": before})
        return
    from tiefvision_cli.report import print_index_switch

    print_index_switch(console, space, before, info)


register(index_app, index_list, "list")
register(index_app, index_use, "use")
