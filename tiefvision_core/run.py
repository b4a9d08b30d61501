"""One run's context: its settings, the opened store and the catalog snapshot, built once
at the edge (a CLI command, a flow run's start) and found again by key.

Why: a run's steps are Prefect tasks, which take serialisable arguments and may run in
another process (a Dask worker). They receive a :class:`RunKey` (store URL, manifest
version, the settings flags: safe to log, no secrets) and call :func:`run_context`, which
gives every step of the run in one process the same :class:`RunContext`: one settings
object, one opened store (one boto3 client), one catalog snapshot whose manifest and
located boxes are read once. In another process the same key rebuilds the same context,
its credentials from that process's environment as before.

Settings are found again too (:func:`settings_for`): the CLI's checks build them from its
flags, and the flow it runs — called with the resolved values — gets the same object back
instead of building them again, as long as the environment is the same.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from tiefvision_core.catalog.snapshot import CatalogSnapshot
from tiefvision_core.config import Settings, load_settings
from tiefvision_core.storage.layout import MANIFEST_CURRENT
from tiefvision_core.storage.stores import Store
from tiefvision_core.storage.urls import open_store

__all__ = [
    "RunContext",
    "RunKey",
    "forget_runs",
    "run_context",
    "settings_for",
    "start_run",
    "store_for",
]

#: The settings a key carries: what flags and flow parameters set, never a secret.
_KEYED = ("encoder", "device", "batch_size", "backend", "regression_tolerance")
#: How many settings, stores and contexts one process keeps (a CLI run needs one of each).
_KEPT = 8


@dataclass(frozen=True)
class RunKey:
    """What a task needs to find its run's context again: serialisable, safe to log."""

    store_url: str
    manifest_version: str | None
    #: (name, value) of the settings the run was started with (see ``_KEYED``).
    settings: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class RunContext:
    """A run's settings, opened store and catalog snapshot (see the module docstring)."""

    key: RunKey
    settings: Settings
    store: Store
    catalog: CatalogSnapshot


K = TypeVar("K")
V = TypeVar("V")


class _Recent(Generic[K, V]):
    """A small thread-safe mapping that forgets its oldest entries past ``_KEPT``."""

    def __init__(self) -> None:
        self.items: OrderedDict[K, V] = OrderedDict()
        self.lock = threading.RLock()

    def put(self, key: K, value: V) -> V:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > _KEPT:
                self.items.popitem(last=False)
            return value


_SETTINGS: _Recent[int, tuple[tuple, dict[str, object], Settings]] = _Recent()
_STORES: _Recent[tuple[str, tuple], Store] = _Recent()
_CONTEXTS: _Recent[RunKey, RunContext] = _Recent()


def _environment() -> tuple:
    """What settings are read from besides their flags: the environment and the working
    directory (a relative store path)."""
    return os.getcwd(), tuple(sorted(os.environ.items()))


def settings_for(**overrides: object) -> Settings:
    """:func:`~tiefvision_core.config.load_settings` built once per process and environment.

    Settings built earlier are reused when they are what these overrides give: the same
    environment, every override equal to their value, and every flag they were built with
    among these overrides. The CLI builds them from its flags; the flow it then calls with
    the resolved values (and the subflows after it) get that object back.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    environment = _environment()
    with _SETTINGS.lock:
        for built_in, flags, settings in reversed(_SETTINGS.items.values()):
            if (
                built_in == environment
                and all(given.get(k, _MISSING) == v for k, v in flags.items())
                and all(getattr(settings, k, _MISSING) == v for k, v in given.items())
            ):
                return settings
        settings = load_settings(**given)
        return _SETTINGS.put(id(settings), (environment, given, settings))[2]


_MISSING = object()


def store_for(settings: Settings) -> Store:
    """The store at ``settings.store_url``, opened once per process and environment (one
    boto3 client per bucket: thread-safe and expensive to build)."""
    key = (settings.store_url, _environment())
    with _STORES.lock:
        store = _STORES.items.get(key)
        return store if store is not None else _STORES.put(key, open_store(key[0], settings))


def start_run(settings: Settings) -> RunContext:
    """The context of a run starting now, at the edge: ``settings`` (from
    :func:`settings_for`), their store, and the catalog pinned to the manifest version
    CURRENT names now. A run that starts in the same process with the same key (a subflow)
    shares the context, its snapshot and what the snapshot already read."""
    store = store_for(settings)
    key = RunKey(
        settings.store_url,
        store.read_pointer(MANIFEST_CURRENT),
        tuple((name, value) for name in _KEYED if (value := getattr(settings, name)) is not None),
    )
    with _CONTEXTS.lock:
        known = _CONTEXTS.items.get(key)
        if known is not None and known.store is store:
            return known
        snapshot = CatalogSnapshot(store, key.manifest_version)
        return _CONTEXTS.put(key, RunContext(key, settings, store, snapshot))


def run_context(key: RunKey) -> RunContext:
    """The context ``key`` names: the one this process already holds, else rebuilt (a task
    on another process) from the key and this process's environment."""
    with _CONTEXTS.lock:
        known = _CONTEXTS.items.get(key)
        if known is not None:
            return known
        settings = settings_for(store_url=key.store_url, **dict(key.settings))
        store = store_for(settings)
        snapshot = CatalogSnapshot(store, key.manifest_version)
        return _CONTEXTS.put(key, RunContext(key, settings, store, snapshot))


def forget_runs() -> None:
    """Drop every settings, store and context this process holds (tests that change the
    environment's endpoints between runs)."""
    for recent in (_SETTINGS, _STORES, _CONTEXTS):
        with recent.lock:
            recent.items.clear()
