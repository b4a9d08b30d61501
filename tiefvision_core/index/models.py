"""The models a search by photo runs, loaded once per version: the current locator and the
similarity projection of the supervised space.

Why a cache: a model version's files never change once its pointer names it, so a web
service (or any long-lived caller) pays for reading a pointer per upload, not for the
weights (several store reads, S3 round trips on a remote store, and a ``torch.load``). The
key holds the version read from the pointer (or recorded by the index), so a new
``CURRENT`` is picked up by the next search, and the store and encoder version, so two
stores or encoders never share a model. One cache for both kinds, bounded: the versions a
service moves past are dropped, oldest use first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar, cast

from tiefvision_core import locator
from tiefvision_core.encoders import Encoder
from tiefvision_core.errors import IncompatibleModel
from tiefvision_core.locator.model_files import LocatorModel
from tiefvision_core.similarity import training
from tiefvision_core.similarity.deep_ranking import ProjectionNet
from tiefvision_core.storage.layout import LOCATOR_CURRENT, SIMILARITY_CURRENT
from tiefvision_core.storage.stores import Store

__all__ = ["MODELS", "ModelCache", "current_locator", "locator_model", "similarity_projection"]

T = TypeVar("T")

#: (kind, store URI, model version, encoder version)
ModelKey = tuple[str, str, str, str]


class ModelCache:
    """Loaded models by (kind, store, version, encoder version), the ``keep`` most recently
    used. Safe from many threads: two searches that miss the same key at once load it once
    (the second waits for the first); a load that fails caches nothing."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._models: OrderedDict[ModelKey, object] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[ModelKey, threading.Lock] = {}

    def get(
        self, kind: str, store: Store, version: str, encoder_version: str, load: Callable[[], T]
    ) -> T:
        """The model cached under the key, else ``load()``'s, cached."""
        key = (kind, store.uri(), version, encoder_version)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return cast(T, self._models[key])
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._models:  # loaded by the search this one waited for
                    self._models.move_to_end(key)
                    return cast(T, self._models[key])
            try:
                model = load()
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                self._models[key] = model
                while len(self._models) > self.keep:
                    self._models.popitem(last=False)
        return model

    def cached_keys(self) -> list[ModelKey]:
        """The cached keys, least recently used first."""
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


#: The process's cache: the web service's searches and the CLI's ``search FILE`` use it.
MODELS = ModelCache()


def locator_model(store: Store, version: str, encoder_version: str) -> LocatorModel:
    """Locator ``version`` for ``encoder_version``, loaded once per process (the locate
    stage's shards and the searches by photo share it). IncompatibleModel when it was
    trained on another encoder version: remembered too, since a version's encoder never
    changes, so an unusable locator is read once."""

    def load() -> LocatorModel | IncompatibleModel:
        try:
            return locator.model_files.load_locator(store, version, encoder_version=encoder_version)
        except IncompatibleModel as unusable:
            return unusable

    model = MODELS.get("locator", store, version, encoder_version, load)
    if isinstance(model, IncompatibleModel):
        raise model
    return model


def current_locator(store: Store, encoder: Encoder) -> LocatorModel | None:
    """The current locator when it was trained on ``encoder``, else None (none trained, or
    trained on another encoder: the caller searches the whole photo, never a wrong-space
    box). Costs one pointer read once its version is loaded."""
    version = store.read_pointer(LOCATOR_CURRENT)
    if version is None:
        return None
    try:
        return locator_model(store, version, encoder.version)
    except IncompatibleModel:
        return None


def similarity_projection(
    store: Store, encoder: Encoder, version: str | None = None
) -> ProjectionNet:
    """The similarity model ``version`` (an index records the one its vectors went through),
    else the current one; an InputError when none was trained, IncompatibleModel when it was
    trained on another encoder version."""
    version = version or store.read_pointer(SIMILARITY_CURRENT)
    if version is None:  # load_projection says what to run
        return training.load_projection(store, encoder.version)[0]
    chosen = version
    return MODELS.get(
        "similarity",
        store,
        chosen,
        encoder.version,
        lambda: training.load_projection(store, encoder.version, chosen)[0],
    )
