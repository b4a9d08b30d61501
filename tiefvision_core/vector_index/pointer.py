"""Switching ``indexes/<space>/CURRENT`` forward only: never to a version built from older
inputs than the live one.

Why a guard of its own next to the store lock: the lock serialises runs that take it, but
a run whose lock was broken while it was frozen, a run on another store URL spelling of
the same bucket, or a tool that does not take the lock can still publish late. A slow run
that read the encodings at 02:00 and publishes at 03:00 must not replace the version a
faster run built at 02:30 from newer encodings: search would silently lose the photos
added in between.

How: every version records ``inputs_read_at`` in its ``metadata.json`` (wall-clock epoch
seconds, taken *before* its inputs were read: the manifest, encodings, similarity model
and live index), and the pointer moves by compare-and-swap (:meth:`Store.replace_if`; the
first one by :meth:`Store.put_if_absent`) from a live version whose stamp is not newer.
A refused version's folder is deleted: it was never live. Versions written before the
stamp existed count as oldest. Across machines the stamp is only as good as their clock
sync (NTP's milliseconds are far below a build's minutes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from tiefvision_core.errors import StorageNotFound, TiefVisionError
from tiefvision_core.storage.layout import current_key
from tiefvision_core.storage.stores import Store

__all__ = [
    "INPUTS_READ_AT",
    "RegressionRefused",
    "StaleIndexInputs",
    "inputs_read_at",
    "switch_current",
]

#: The metadata field (epoch seconds) that orders versions by the age of their inputs.
INPUTS_READ_AT = "inputs_read_at"


class StaleIndexInputs(TiefVisionError):
    """The live index was built from newer inputs than this one: CURRENT is left alone."""


class RegressionRefused(TiefVisionError):
    """The new version retrieves worse than the live one, beyond the tolerance: CURRENT is
    left alone and the new version stays on storage for inspection (see
    :mod:`tiefvision_core.index.gate`). ``comparison``: both versions' numbers, as the
    gate's artifact shows them. Not worth a retry: the same inputs give the same numbers."""

    def __init__(self, message: str, comparison: Mapping[str, object]) -> None:
        super().__init__(message)
        self.comparison = dict(comparison)

    def __reduce__(self) -> tuple[type[RegressionRefused], tuple[str, dict[str, object]]]:
        return type(self), (str(self), self.comparison)


def inputs_read_at(store: Store, prefix: str, version: str) -> float:
    """When ``version``'s inputs were read; 0 for versions without the stamp (or without
    readable metadata), so any stamped version may replace them."""
    try:
        metadata = json.loads(store.get_bytes(f"{prefix}{version}/metadata.json"))
    except (StorageNotFound, ValueError):
        return 0.0
    return float(metadata.get(INPUTS_READ_AT) or 0.0)


def switch_current(store: Store, prefix: str, version: str, read_at: float) -> None:
    """Point ``<prefix>CURRENT`` at ``version`` (whose inputs were read at ``read_at``)
    unless the live version's inputs are newer: then delete ``version`` and raise
    :class:`StaleIndexInputs`. A pointer that moves while we judge is judged again."""
    key, new = current_key(prefix), version.encode("utf-8")
    while True:
        try:
            seen: bytes | None = store.get_bytes(key)
        except StorageNotFound:
            seen = None
        if seen is None:
            if store.put_if_absent(key, new):
                return
            continue
        live = seen.decode("utf-8").strip()
        live_read_at = inputs_read_at(store, prefix, live)
        if live_read_at > read_at:
            store.delete_prefix(f"{prefix}{version}/")
            space = prefix.strip("/").rsplit("/", 1)[-1]
            raise StaleIndexInputs(
                f"the live {space} index {live} was built from newer inputs than {version} "
                f"(read {live_read_at - read_at:.0f} s later): {version} was discarded and "
                "CURRENT stays; rebuild again if the catalog changed since"
            )
        if store.replace_if(key, seen, new):
            return
