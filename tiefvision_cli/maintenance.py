"""Storage maintenance commands: ``tiefvision index list|use`` and ``tiefvision gc``.

Thin: the decisions live in ``tiefvision_core.index.versions`` and ``tiefvision_core.gc``.
Switching a version and collecting garbage hold the store's reindex lock, so neither
happens under a running reindex or rebuild (which would prune or publish meanwhile).
Heavy imports stay inside the commands so ``tiefvision --help`` stays fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from tiefvision_cli.options import JsonOption, LockTimeoutOption, StoreOption
from tiefvision_cli.prefect_server import flow_run, start_early
from tiefvision_cli.preflight import preflight

if TYPE_CHECKING:
    from tiefvision_core.storage.stores import Store

__all__ = ["gc", "index_app"]

console = Console()

index_app = typer.Typer(
    help="Index versions: list them, switch the live one back or forth.", no_args_is_help=True
)


@contextmanager
def _store_lock(store: Store, what: str, timeout_s: float) -> Iterator[None]:
    from tiefvision_core.reindex import LOCK_NAME
    from tiefvision_core.storage.lock import StoreLock

    lock = StoreLock(store, LOCK_NAME, label=f"tiefvision {what} (pid {os.getpid()})")
    with lock.hold(timeout_s):
        yield


@index_app.command("list")
def index_list(
    store: StoreOption = None,
    space: Annotated[
        str | None, typer.Option(help="unsupervised or supervised (default: both).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Every version with its rows, bytes, creation time, self-check and which is live."""
    from tiefvision_cli.report import print_index_versions
    from tiefvision_core.index.versions import SPACES, list_versions, space_prefix

    spaces = [space] if space else list(SPACES)
    for name in spaces:
        space_prefix(name)
    target = preflight(store=store).store
    listed = [info for name in spaces for info in list_versions(target, name)]
    if as_json:
        print(json.dumps([info.as_dict() for info in listed]))
        return
    print_index_versions(console, listed)


@index_app.command("use")
def index_use(
    version: Annotated[str, typer.Argument(help="The version to make live (see index list).")],
    store: StoreOption = None,
    space: Annotated[str, typer.Option(help="unsupervised or supervised.")] = "unsupervised",
    lock_timeout: LockTimeoutOption = 60.0,
    as_json: JsonOption = False,
) -> None:
    """Make VERSION the live index (roll back or forward) after it passes its self-check
    again; CURRENT is switched atomically, readers pick it up on their next request."""
    from tiefvision_core.index.versions import space_prefix, use_version
    from tiefvision_core.storage.layout import current_key

    space_prefix(space)
    target = preflight(store=store).store
    before = target.read_pointer(current_key(space_prefix(space)))
    with _store_lock(target, "index use", lock_timeout):
        info = use_version(target, space, version)
    if as_json:
        print(json.dumps({**info.as_dict(), "before": before}))
        return
    from tiefvision_cli.report import print_index_switch

    print_index_switch(console, space, before, info)


def gc(
    store: StoreOption = None,
    retention: Annotated[
        int | None,
        typer.Option(min=1, help="Versions kept per kind (default: $TIEFVISION_RETENTION, 3)."),
    ] = None,
    grace_hours: Annotated[
        float, typer.Option(min=0, help="Leftovers younger than this are kept (running jobs).")
    ] = 6.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would go and its bytes; delete nothing.")
    ] = False,
    lock_timeout: LockTimeoutOption = 600.0,
    as_json: JsonOption = False,
) -> None:
    """Delete what nothing live refers to: encodings and boxes of removed or re-shot photos,
    index, model and manifest versions beyond the retention (never the live one), leftovers
    of killed runs, and the annotations, annotation snapshots and crops datasets of photos
    no retained manifest lists. Waits for a running reindex or rebuild."""
    start_early()  # Prefect's server boots while the store is checked
    settings = preflight(store=store).settings  # a wrong URL fails here, before the flow runs

    from flows.gc import gc as gc_flow

    with flow_run():
        report = gc_flow(
            store=settings.store_url,
            retention=retention,
            grace_hours=grace_hours,
            dry_run=dry_run,
            lock_timeout=lock_timeout,
        )
    if as_json:
        print(json.dumps(report.as_dict()))
        return
    from tiefvision_cli.report import print_gc_report

    print_gc_report(console, report, dry_run=dry_run)
