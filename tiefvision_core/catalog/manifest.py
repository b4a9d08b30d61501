"""The manifest on storage: the pipeline's single source of truth about *which* images exist
and *whether they changed*.

Later stages key everything on ``image_id`` (:func:`image_id_for`) and decide whether to
recompute by ``sha256``; they read the current version (:func:`read_manifest`) and only its
usable rows (:func:`usable_rows`). A version — manifest and rejects list — is published
whole, then ``CURRENT`` is switched (:func:`publish_manifest`): a reader sees the old
manifest or the new one, never a mix. How a version is made from a source is
:mod:`tiefvision_core.catalog.ingest`.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pyarrow as pa

from tiefvision_core.storage import layout
from tiefvision_core.storage.layout import (
    MANIFEST_CURRENT,
    MANIFEST_PREFIX,
    REJECTS_PREFIX,
)
from tiefvision_core.storage.stores import Store

if TYPE_CHECKING:  # pandas is imported where a frame is built: a no-op plan never pays it
    import pandas as pd

__all__ = [
    "CHANGE_KINDS",
    "MANIFEST_COLUMNS",
    "MANIFEST_SCHEMA",
    "STATUSES",
    "ManifestVersion",
    "find_renames",
    "image_id_for",
    "publish_manifest",
    "read_manifest",
    "read_rejects",
    "usable_rows",
]

CHANGE_KINDS = ("new", "changed", "unchanged", "removed")
STATUSES = ("ok", "rejected", "removed")

MANIFEST_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("rel_path", pa.string()),
        ("source_uri", pa.string()),
        ("sha256", pa.string()),
        ("bytes", pa.int64()),
        ("version_tag", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("mode", pa.string()),
        ("status", pa.string()),
        ("change", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)
MANIFEST_COLUMNS = tuple(MANIFEST_SCHEMA.names)


def image_id_for(rel_path: str) -> str:
    """A stable, URL- and filename-safe id derived from the image's relative path.

    Readable (the path, slugged) and collision-free (a short hash of the exact path), so
    ``a b.jpg`` and ``a_b.jpg`` never share an id and no id can contain ``/`` or ``..``.
    """
    normal = unicodedata.normalize("NFC", rel_path)
    ascii_ = unicodedata.normalize("NFKD", normal).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_.replace("/", "__"))
    slug = re.sub(r"\.{2,}", ".", slug).strip("-._")[:80]
    digest = hashlib.sha1(normal.encode("utf-8")).hexdigest()[:8]
    return f"{slug}-{digest}" if slug else digest


@dataclass(frozen=True)
class ManifestVersion:
    version: str
    manifest_uri: str
    rejects_uri: str


def _to_table(frame: pd.DataFrame) -> pa.Table:
    extra = [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    schema = pa.schema([*MANIFEST_SCHEMA, *(pa.field(c, pa.string()) for c in extra)])
    frame = frame.astype({c: "object" for c in extra})
    return pa.Table.from_pandas(frame[list(schema.names)], schema=schema, preserve_index=False)


def publish_manifest(store: Store, frame: pd.DataFrame, *, keep: int = 5) -> ManifestVersion:
    """Write manifest + rejects as a new version, then switch ``CURRENT`` atomically."""
    table = _to_table(frame)
    content = hashlib.sha256(
        json.dumps(frame[["image_id", "sha256", "status"]].astype(str).values.tolist()).encode()
    ).hexdigest()[:8]
    version = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{content}"
    manifest_key = layout.manifest_key(version)
    rejects_key = layout.rejects_key(version)
    rejects = table.filter(pa.compute.equal(table["status"], "rejected")).select(
        ["image_id", "rel_path", "source_uri", "sha256", "reason", "detail", "ingested_at"]
    )
    store.write_parquet(rejects_key, rejects)
    store.write_parquet(manifest_key, table)
    store.publish_pointer(MANIFEST_CURRENT, version)
    _prune(store, keep)
    return ManifestVersion(version, store.uri(manifest_key), store.uri(rejects_key))


def _prune(store: Store, keep: int) -> None:
    """Keep the newest ``keep`` versions: a reader of a recent version keeps working."""
    for prefix in (MANIFEST_PREFIX, REJECTS_PREFIX):
        versions = sorted(i.key for i in store.list(prefix) if i.key.endswith(".parquet"))
        for key in versions[:-keep]:
            store.delete(key)


def read_manifest(store: Store, version: str | None = None) -> pa.Table | None:
    """The current (or a given) manifest version; ``None`` before the first ingest."""
    version = version or store.read_pointer(MANIFEST_CURRENT)
    if version is None:
        return None
    return store.read_parquet(layout.manifest_key(version))


def read_rejects(store: Store, version: str | None = None) -> pa.Table | None:
    version = version or store.read_pointer(MANIFEST_CURRENT)
    if version is None:
        return None
    return store.read_parquet(layout.rejects_key(version))


def usable_rows(manifest: pa.Table) -> pa.Table:
    """The rows a later stage may read (status ``ok``). Rejected rows have no width,
    height or format, and removed ones name bytes that are gone: a stage that sizes,
    decodes or indexes a photo must never see them, or one bad file stops every run."""
    return manifest.filter(pa.compute.equal(manifest["status"], "ok"))


def find_renames(manifest: pa.Table) -> dict[str, str]:
    """Removed image id → a usable image id holding the same bytes (sha256): a photo
    renamed or moved in the source, which ingest sees as one path removed and one added.

    Why by status and not by this version's ``change``: whatever follows a rename (the
    annotations moving to the new id) may fail after the manifest was published; a removed
    row stays in the manifest until gc drops it, so the next run still finds the pair. Each
    id is paired once; photos new in this version and then paths in order go first.
    """
    rows = manifest.select(["image_id", "rel_path", "sha256", "status", "change"]).to_pylist()
    rows.sort(key=lambda r: (r["change"] not in ("new", "removed"), r["rel_path"]))
    gone: dict[str, list[str]] = {}
    for row in rows:
        if row["status"] == "removed" and row["sha256"]:
            gone.setdefault(row["sha256"], []).append(row["image_id"])
    renames = {}
    for row in rows:
        if row["status"] == "ok" and gone.get(row["sha256"]):
            renames[gone[row["sha256"]].pop(0)] = row["image_id"]
    return renames
