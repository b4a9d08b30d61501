"""The photos a search may answer with: the usable rows of the live catalog manifest.

Why search needs it: an index version is a snapshot of the catalog when it was built. The
live version can be older than the manifest — a reindex whose new version the regression
gate refused, ``tiefvision index use`` rolling back, a reindex between publishing its
manifest and switching the index — and would keep answering with photos the catalog has
removed since, or with the old bytes of a re-shot photo (which gc deletes at once, as it
does a removed photo's). Removal must hold whatever index version is live, so every search
keeps only the hits whose ``(image_id, sha256)`` the live manifest lists as usable.

Light on purpose (pyarrow only): ``tiefvision search --id`` reads it in a cold process that
must not import torch, and reads only the manifest's three key columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tiefvision_core.storage.layout import MANIFEST_CURRENT, manifest_key
from tiefvision_core.storage.stores import Store

__all__ = ["LiveCatalog", "read_live_catalog"]

_KEY_COLUMNS = ["image_id", "sha256", "status"]


@dataclass(frozen=True)
class LiveCatalog:
    """``image_id`` and ``sha256`` of the usable (status ``ok``) photos of one manifest
    version, as Arrow arrays: no Python object per photo, whatever the catalog's size."""

    version: str
    image_ids: pa.Array
    sha256: pa.Array

    @classmethod
    def from_manifest(cls, version: str, manifest: pa.Table) -> LiveCatalog:
        """The usable rows of ``manifest`` (a rejected or removed photo is never an answer:
        the service cannot show it, and an index build leaves it out)."""
        usable = manifest.filter(pc.equal(manifest["status"], "ok"))
        return cls(
            version,
            usable["image_id"].combine_chunks(),
            usable["sha256"].combine_chunks(),
        )

    def holds(self, image_id: str) -> bool:
        """Whether ``image_id`` is a usable photo of this catalog (a scan: for error
        messages, not per hit)."""
        return bool(pc.any(pc.equal(self.image_ids, image_id)).as_py())


def read_live_catalog(store: Store) -> LiveCatalog | None:
    """The live manifest's usable photos; None before the first ingest (an index published
    without a catalog, as tests and benches do, is then searched unfiltered)."""
    version = store.read_pointer(MANIFEST_CURRENT)
    if version is None:
        return None
    return LiveCatalog.from_manifest(
        version, store.read_parquet(manifest_key(version), columns=_KEY_COLUMNS)
    )
