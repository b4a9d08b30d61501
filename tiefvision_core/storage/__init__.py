"""Where everything lives: local and S3 stores, capped and checked reads, the store lock.

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
    from tiefvision_core.storage.stores import (  # noqa: F401
        DEFAULT_MAX_BYTES,
        INTERACTIVE,
        LocalStore,
        ObjectInfo,
        S3Store,
        Store,
        open_store,
        read_object,
        read_source,
        redact_url,
    )

#: Public name → the module of this package that defines it.
_EXPORTS = {
    "DEFAULT_MAX_BYTES": "stores",
    "INTERACTIVE": "stores",
    "LocalStore": "stores",
    "LockBusy": "lock",
    "LockHolder": "lock",
    "LockLost": "lock",
    "ObjectInfo": "stores",
    "S3Store": "stores",
    "Store": "stores",
    "StoreLock": "lock",
    "lock_key": "lock",
    "open_store": "stores",
    "process_gone": "lock",
    "read_object": "stores",
    "read_source": "stores",
    "redact_url": "stores",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
