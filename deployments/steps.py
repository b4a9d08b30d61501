"""Deploy-time steps that ``prefect.yaml`` calls while ``prefect deploy`` runs.

Why here and not in the CLI: a step runs inside ``prefect deploy``, not in a TiefVision
command; it needs only the pure logic of :mod:`tiefvision_core.deployments`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from tiefvision_core.deployments import values_from_environment

__all__ = ["environment"]


def environment(**spec: Mapping[str, str]) -> dict[str, str]:
    """prefect.yaml build step: values from the deployer's environment, with defaults.

    Used as ``deployments.steps.environment`` (``id: nightly``) so the file can say
    ``cron: "{{ nightly.cron }}"`` and still deploy when the variable is unset.
    """
    return values_from_environment(spec, os.environ)
