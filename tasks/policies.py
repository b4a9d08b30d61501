"""Orchestration policies shared by every task: which failures are worth a retry.

Why: retrying a wrong password or a missing folder only delays the message the user needs;
retrying a dropped connection or a restarted S3 server is what makes a nightly run finish.
"""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

from tiefvision_core.errors import ConfigError, InputError, StorageAuthError, StorageNotFound

__all__ = ["NO_CACHE", "RETRYING", "RETRY_DELAYS", "retry_transient"]

#: Backoff between task retries, in seconds (botocore already retries single requests).
RETRY_DELAYS = [2, 8, 30]

_USER_ERRORS = (ConfigError, InputError, StorageAuthError, StorageNotFound)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry anything but errors a retry cannot fix."""
    error = state.result(raise_on_failure=False)
    return not isinstance(error, _USER_ERRORS)


#: Task options for work that touches storage: transient failures retried with backoff, no
#: result caching (results are references to what is on storage, which is the cache).
RETRYING: dict[str, Any] = {
    "retries": len(RETRY_DELAYS),
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_condition_fn": retry_transient,
    "cache_policy": NO_CACHE,
}
