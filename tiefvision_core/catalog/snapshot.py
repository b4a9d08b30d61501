"""The catalog as one run sees it: one manifest version, read once, and what is derived
from it (the current locator's boxes), each computed once.

Why: the stages of a run (plan the encodings, filter them, build the index, update each
space) all read the same catalog. A snapshot pinned to the manifest version the run
started with is what they share, instead of a manifest table handed from call to call and
re-read wherever it was not handed on. A manifest version's file never changes, so the
snapshot never goes stale; a later ingest publishes a new version, which the next run pins.

What a snapshot derives from other files (the located boxes) is remembered under a key
naming exactly what was read (the locator version and its part files), so a locate run
that adds parts between two reads is never hidden by the cache.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import TypeVar

import pyarrow as pa

from tiefvision_core.catalog.manifest import read_manifest
from tiefvision_core.storage.layout import MANIFEST_CURRENT
from tiefvision_core.storage.stores import Store

__all__ = ["CatalogSnapshot", "catalog_snapshot"]

T = TypeVar("T")
_UNREAD = object()


class CatalogSnapshot:
    """One manifest version of ``store``'s catalog (``None``: before the first ingest).

    The manifest is read on first use and kept; :meth:`remember` keeps what a stage derives
    from the catalog (one value per key, computed once even when tasks ask concurrently).
    """

    def __init__(self, store: Store, version: str | None, *, manifest: object = _UNREAD) -> None:
        self.store = store
        self.version = version
        unread = _UNREAD if version is not None else None
        self._manifest = manifest if manifest is not _UNREAD else unread
        self._derived: dict[Hashable, object] = {}
        self._lock = threading.RLock()  # a derived value may read the manifest

    @classmethod
    def current(cls, store: Store) -> CatalogSnapshot:
        """The snapshot of the version CURRENT names now."""
        return cls(store, store.read_pointer(MANIFEST_CURRENT))

    @classmethod
    def of(cls, store: Store, manifest: pa.Table | None) -> CatalogSnapshot:
        """A snapshot of a manifest table already read (a caller that holds one)."""
        return cls(store, None, manifest=manifest)

    @property
    def manifest(self) -> pa.Table | None:
        """The manifest table of this version (read once), None before the first ingest."""
        if self._manifest is _UNREAD:
            with self._lock:
                if self._manifest is _UNREAD:
                    self._manifest = read_manifest(self.store, self.version)
        return self._manifest

    def remember(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``'s value for ``key``, computed the first time it is asked for."""
        with self._lock:
            if key not in self._derived:
                self._derived[key] = compute()
            return self._derived[key]  # type: ignore[return-value]


def catalog_snapshot(store: Store, catalog: CatalogSnapshot | None) -> CatalogSnapshot:
    """The snapshot a run passed on, else the store's current one (a call outside a run:
    a test, a one-off query)."""
    return catalog if catalog is not None else CatalogSnapshot.current(store)
