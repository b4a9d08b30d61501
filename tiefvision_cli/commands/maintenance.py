"""``gc``: delete what nothing live refers to (a flow).

Thin: the decisions live in ``tiefvision_core.pipeline.gc``. Collecting garbage holds the store's
reindex lock, so it never happens under a running reindex or rebuild (which would prune or
publish meanwhile).
"""

from __future__ import annotations

from typing import Annotated

import typer

from tiefvision_cli.commands import console, print_json
from tiefvision_cli.options import JsonOption, LockTimeoutOption, StoreOption
from tiefvision_cli.prefect_server import flow_run, start_early
from tiefvision_cli.preflight import preflight

__all__ = ["gc"]


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
    """Delete what nothing live refers to; waits for a running reindex or rebuild.

    Encodings and boxes of removed or re-shot photos; index, model and manifest versions
    beyond the retention (never the live one); leftovers of killed runs; and the
    annotations, annotation snapshots and crops datasets of photos no retained manifest
    lists.
    """
    start_early()  # Prefect's server boots while the store is checked
    settings = preflight(store=store).settings  # a wrong URL fails here, before the flow runs

    import flows.gc

    with flow_run():
        report = flows.gc.gc(
            store=settings.store_url,
            retention=retention,
            grace_hours=grace_hours,
            dry_run=dry_run,
            lock_timeout=lock_timeout,
        )
    if as_json:
        print_json(report.as_dict())
        return
    from tiefvision_cli.report import print_gc_report

    print_gc_report(console, report, dry_run=dry_run)
