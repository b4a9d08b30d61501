"""Where everything lives: the store interface and local stores (``stores``), S3 (``s3``),
what a URL names, opened and read with caps and checks (``urls``), the store lock (``lock``).

Public names are re-exported here and imported on first use (PEP 562): importing
one stage's package must not load the heavy dependencies of its other modules
(a search by id never imports torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tiefvision_core._lazy import lazy_exports

if TYPE_CHECKING:
    from tiefvision_core.storage.lock import (  # noqa: F401
        LockBusy,
        LockHolder,
        LockLost,
        StoreLock,
        lock_key,
        process_gone,
    )
    from tiefvision_core.storage.s3 import INTERACTIVE, S3Store  # noqa: F401
    from tiefvision_core.storage.stores import (  # noqa: F401
        LocalStore,
        ObjectInfo,
        Store,
        redact_url,
    )
    from tiefvision_core.storage.urls import (  # noqa: F401
        DEFAULT_MAX_BYTES,
        open_store,
        read_object,
        read_source,
    )

#: Public name → the module of this package that defines it.
_EXPORTS = {
    "DEFAULT_MAX_BYTES": "urls",
    "INTERACTIVE": "s3",
    "LocalStore": "stores",
    "LockBusy": "lock",
    "LockHolder": "lock",
    "LockLost": "lock",
    "ObjectInfo": "stores",
    "S3Store": "s3",
    "Store": "stores",
    "StoreLock": "lock",
    "lock_key": "lock",
    "open_store": "urls",
    "process_gone": "lock",
    "read_object": "urls",
    "read_source": "urls",
    "redact_url": "stores",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
