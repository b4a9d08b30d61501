"""Orchestration policies shared by every task: which failures are worth a retry.

Why: retrying a wrong password or a missing folder only delays the message the user needs;
retrying a dropped connection or a restarted S3 server is what makes a nightly run finish.
"""

from __future__ import annotations

from typing import Any

from tiefvision_core.errors import ConfigError, InputError, StorageAuthError, StorageNotFound

__all__ = ["RETRY_DELAYS", "retry_transient"]

#: Backoff between task retries, in seconds (botocore already retries single requests).
RETRY_DELAYS = [2, 8, 30]

_USER_ERRORS = (ConfigError, InputError, StorageAuthError, StorageNotFound)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry anything but errors a retry cannot fix."""
    error = state.result(raise_on_failure=False)
    return not isinstance(error, _USER_ERRORS)
