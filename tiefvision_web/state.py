"""What one running web service holds: settings, the store, the live catalog and indexes,
the annotations database and (once a photo is uploaded) the encoder.

Why lazily: the service must start in a second and answer ``/api/health`` even on a store
where nothing was built yet; the encoder (seconds to build) is needed only for search by
upload, the annotations database only by the editors.

Why an impatient store: a person waits on every request, so the S3 client gives up within
seconds (:data:`tiefvision_core.storage.s3.INTERACTIVE`) instead of retrying for minutes, and
``/api/health`` probes the storage at most every :data:`HEALTH_TTL` seconds, whatever the
request rate.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from tiefvision_core.catalog.manifest import read_manifest
from tiefvision_core.config import Settings
from tiefvision_core.errors import InputError, StorageError
from tiefvision_core.storage.layout import MANIFEST_CURRENT, index_current
from tiefvision_core.storage.stores import Store
from tiefvision_core.storage.urls import open_store
from tiefvision_core.vector_index.versions import SPACES, OpenedIndex, open_index
from tiefvision_web.admission import Admission
from tiefvision_web.catalog_view import CatalogView
from tiefvision_web.live_pointer import LivePointer

if TYPE_CHECKING:
    from tiefvision_core.annotations.repository import AnnotationDatabase
    from tiefvision_core.encoders import Encoder

__all__ = ["HEALTH_TTL", "WebState"]

log = logging.getLogger(__name__)

#: How long (seconds) one storage probe answers ``/api/health``.
HEALTH_TTL = 2.0

NO_CATALOG = "nothing was ingested into this store yet: run `tiefvision ingest --images DIR`"


def _no_index(space: str) -> InputError:
    """What a search of ``space`` answers before its first index: the command that builds it."""
    return InputError(
        f"there is no {space} index yet: build it with `tiefvision rebuild-index --space {space}`"
    )


class WebState:
    """Shared by every request; each member is safe to use from many threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        reload_interval: float = 1.0,
        encoder: Encoder | None = None,
    ) -> None:
        self.settings = settings
        self.store: Store = open_store(settings.store_url, settings, interactive=True)
        self.catalog: LivePointer[CatalogView] = LivePointer(
            self.store,
            MANIFEST_CURRENT,
            self._load_catalog,
            lambda: InputError(NO_CATALOG),
            interval=reload_interval,
        )
        self.indexes: dict[str, LivePointer[OpenedIndex]] = {
            space: LivePointer(
                self.store,
                index_current(space),
                functools.partial(open_index, self.store, space),
                functools.partial(_no_index, space),
                interval=reload_interval,
            )
            for space in SPACES
        }
        self._lock = threading.Lock()
        self._annotations: AnnotationDatabase | None = None
        self._encoder: Encoder | None = encoder
        self.thumbnails: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self.thumbnail_lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._probed: tuple[float, bool] | None = None
        # Searches by upload: as many at work as CPU workers, as many again waiting.
        self.admission = Admission(slots=settings.workers, queue=settings.workers)

    def storage_reachable(self) -> bool:
        """Whether the store answered a small read within the interactive timeouts, probed
        by one request at a time and at most every :data:`HEALTH_TTL` seconds (the others
        get the last answer)."""
        probed = self._probed
        if probed is not None and (
            time.monotonic() - probed[0] < HEALTH_TTL or not self._probe_lock.acquire(False)
        ):
            return probed[1]  # fresh, or another request is probing right now
        if probed is None:
            self._probe_lock.acquire()  # no answer yet: wait for the first probe
        try:
            try:
                self.store.exists(MANIFEST_CURRENT)
                reachable = True
            except StorageError as error:
                log.warning("storage probe failed: %s", error)
                reachable = False
            self._probed = (time.monotonic(), reachable)
            return reachable
        finally:
            self._probe_lock.release()

    def _load_catalog(self, version: str) -> CatalogView:
        manifest = read_manifest(self.store, version)
        if manifest is None:  # pragma: no cover - the pointer named it a moment ago
            raise InputError(NO_CATALOG)
        return CatalogView(version, manifest)

    @property
    def annotations(self) -> AnnotationDatabase:
        """The annotations database (opened, and migrated, on first use)."""
        if self._annotations is None:
            with self._lock:
                if self._annotations is None:
                    from tiefvision_core.annotations.repository import open_annotations

                    self._annotations = open_annotations(self.settings)
        return self._annotations

    @property
    def encoder(self) -> Encoder:
        """The encoder the indexes were built with (built on first upload)."""
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    from tiefvision_core.encoders import get_encoder

                    self._encoder = get_encoder(self.settings.encoder)
        return self._encoder

    def close(self) -> None:
        if self._annotations is not None:
            self._annotations.close()
