"""``tiefvision trigger``'s side of a deployment run: the ``--param NAME=VALUE`` words.

Why so little here: talking to the Prefect server (lookup, schema check, run, result) is
:mod:`deployments.client`, shared with the web service; what is the command line's own is
turning shell words into parameters, which a person types as text.
"""

from __future__ import annotations

from collections.abc import Sequence

from deployments import client
from deployments.client import TriggeredRun
from tiefvision_core.deployments import split_parameters

__all__ = ["trigger"]


def trigger(
    name: str,
    params: Sequence[str] = (),
    *,
    wait: bool = False,
    timeout: float | None = None,
    poll_seconds: float = 2.0,
) -> TriggeredRun:
    """Start a run of a deployment with ``NAME=VALUE`` parameters; a value is JSON when it
    parses and the deployment's schema does not take it as text (``keep=3``)."""
    return client.trigger(
        name,
        split_parameters(params),
        text_as_json=True,
        wait=wait,
        timeout=timeout,
        poll_seconds=poll_seconds,
    )
