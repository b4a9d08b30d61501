"""Orchestration policies shared by every task: which failures are worth a retry.

Why: retrying a wrong password or a missing folder only delays the message the user needs;
retrying a dropped connection or a restarted S3 server is what makes a nightly run finish.
"""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

from tiefvision_core.errors import ConfigError, InputError, StorageAuthError, StorageNotFound
from tiefvision_core.vector_index.pointer import RegressionRefused

__all__ = ["EPHEMERAL", "NO_CACHE", "RETRYING", "RETRY_DELAYS", "retry_transient"]

#: Backoff between task retries, in seconds (botocore already retries single requests).
RETRY_DELAYS = [2, 8, 30]

#: A refused regression is one too: the same version scores the same on a retry (and each
#: retry would publish one more version for nothing).
_USER_ERRORS = (ConfigError, InputError, StorageAuthError, StorageNotFound, RegressionRefused)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry anything but errors a retry cannot fix."""
    error = state.result(raise_on_failure=False)
    return not isinstance(error, _USER_ERRORS)


#: Options for every task: no result caching (results are references to what is on storage,
#: which is the cache) and no result persistence. A task left at Prefect's default would
#: inherit its flow's ``persist_result=True`` (see flows._results) and write its return value,
#: a plan with one entry per image for some tasks, to result storage on every run.
EPHEMERAL: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}

#: Task options for work that touches storage: transient failures retried with backoff.
RETRYING: dict[str, Any] = {
    "retries": len(RETRY_DELAYS),
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_condition_fn": retry_transient,
    **EPHEMERAL,
}
