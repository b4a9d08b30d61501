"""Stores opened once per process and URL.

Why: tasks receive store *URLs* (references that are safe to log and to put in a
deployment form) and open them here; caching keeps one boto3 client — thread-safe and
expensive to build — per URL instead of one per task run. Credentials come from the
environment through :func:`tiefvision_core.config.load_settings`, never from parameters.
"""

from __future__ import annotations

from functools import lru_cache

from tiefvision_core.run import settings_for, store_for
from tiefvision_core.storage.stores import Store
from tiefvision_core.storage.urls import open_store

__all__ = ["get_source", "get_store"]


@lru_cache(maxsize=16)
def get_store(url: str) -> Store:
    """The pipeline's own store (created when it is a local folder that does not exist):
    the run's own (:func:`tiefvision_core.run.store_for`), opened with the run's settings."""
    return store_for(settings_for(store_url=url))


@lru_cache(maxsize=16)
def get_source(url: str) -> Store:
    """A user's image source: a missing folder is an error, not an empty catalog."""
    return open_store(url, create=False)
