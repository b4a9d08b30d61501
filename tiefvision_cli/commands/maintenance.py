"""``gc``: delete what nothing live refers to (a flow).

Thin: the decisions live in ``tiefvision_core.pipeline.gc``. Collecting garbage holds the store's
reindex lock, so it never happens under a running reindex or rebuild (which would prune or
publish meanwhile).
"""

from __future__ import annotations

from tiefvision_cli.commands import console, print_json
from tiefvision_cli.options import JsonOption
from tiefvision_cli.parameters import stage_options
from tiefvision_cli.prefect_server import flow_run, start_early
from tiefvision_cli.preflight import preflight
from tiefvision_core.parameters.stages import GcParameters

__all__ = ["gc"]


@stage_options(GcParameters)
def gc(parameters: GcParameters, as_json: JsonOption = False) -> None:
    """Delete what nothing live refers to; waits for a running reindex or rebuild.

    Encodings and boxes of removed or re-shot photos; index, model and manifest versions
    beyond the retention (never the live one); leftovers of killed runs; and the
    annotations, annotation snapshots and crops datasets of photos no retained manifest
    lists.
    """
    start_early()  # Prefect's server boots while the store is checked
    # a wrong URL fails here, before the flow runs
    settings = preflight(parameters=parameters).settings

    import flows.gc

    with flow_run():
        report = flows.gc.gc(**parameters.resolved(settings).arguments())
    if as_json:
        print_json(report.as_dict())
        return
    from tiefvision_cli.report import print_gc_report

    print_gc_report(console, report, dry_run=parameters.dry_run)
