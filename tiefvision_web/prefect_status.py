"""Deployments and recent flow runs from the configured Prefect server, for the status page.

Why through :mod:`deployments.client`: it is the one client of a configured server (shared
with the CLI) and turns "no PREFECT_API_URL" and "server down" into one line saying what to
do; the web service shows that line instead of failing.
Without ``PREFECT_API_URL`` nothing is imported or contacted (Prefect would otherwise start
a throw-away in-process server).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["prefect_configured", "prefect_status"]


def prefect_configured() -> bool:
    if os.environ.get("PREFECT_API_URL"):
        return True
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def prefect_status(runs: int = 10) -> dict[str, Any]:
    """``{"configured", "deployments", "runs"}`` (or ``"error"`` with what to do)."""
    if not _profile_has_url():
        return {
            "configured": False,
            "deployments": [],
            "runs": [],
            "error": "no Prefect server configured (set PREFECT_API_URL to show runs and "
            "trigger deployments)",
        }
    from prefect.client.schemas.sorting import FlowRunSort

    from deployments.client import PrefectUnavailable, deployment_names, server

    try:
        with server() as client:
            recent = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=runs)
            # Subflows (a reindex's ingest and encode) have no deployment: their flow
            # name says what they are.
            deployments, flows = deployment_names(client, [run.flow_id for run in recent])
            by_id = {d.id: name for name, d in deployments.items()}
    except PrefectUnavailable as error:
        return {"configured": True, "deployments": [], "runs": [], "error": str(error)}
    return {
        "configured": True,
        "deployments": sorted(deployments),
        "runs": [
            {
                "name": run.name,
                "flow": flows.get(run.flow_id),
                "deployment": by_id.get(run.deployment_id),
                "state": run.state.type.value if run.state else None,
                "start_time": run.start_time.isoformat() if run.start_time else None,
                "seconds": round(run.total_run_time.total_seconds(), 1),
            }
            for run in recent
        ],
    }


def _profile_has_url() -> bool:
    try:
        return prefect_configured()
    except Exception:
        return False
