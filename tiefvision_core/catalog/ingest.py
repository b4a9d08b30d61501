"""Catalog ingest: from a folder or bucket of photos to a versioned manifest.

The manifest is the pipeline's single source of truth about *which* images exist and
*whether they changed*. Later stages key everything on ``image_id`` and decide whether to
recompute by ``sha256``. Ingest is incremental:

* an object whose size and version tag (mtime / ETag) match the previous manifest is not
  read at all (``verify_hashes=True`` re-hashes everything instead);
* an object that is read but hashes the same is not decoded again;
* only new or changed bytes get the full decode check (:func:`inspect_image`);
* an image that vanished from the source is kept with ``status="removed"``.

Work is split into chunks named by their input set (:attr:`IngestChunk.chunk_id`): each is
staged as its own Parquet file, so a killed or failed run resumes by skipping staged chunks.
The manifest and the rejects list are then published as a new version
(:mod:`tiefvision_core.catalog.manifest`).
"""

from __future__ import annotations

import functools
import hashlib
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from tiefvision_core.catalog.imaging import DEFAULT_MAX_PIXELS, inspect_image
from tiefvision_core.catalog.manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_SCHEMA,
    ManifestVersion,
    image_id_for,
    publish_manifest,
    read_manifest,
)
from tiefvision_core.catalog.sources import Refused, list_source
from tiefvision_core.errors import ImageRejected, InputError, StorageNotFound
from tiefvision_core.storage.layout import MANIFEST_CURRENT, STAGING_PREFIX
from tiefvision_core.storage.stores import ObjectInfo, Store
from tiefvision_core.storage.urls import DEFAULT_MAX_BYTES

if TYPE_CHECKING:  # pandas is imported where a frame is built: a no-op plan never pays it
    import pandas as pd

__all__ = [
    "IngestChunk",
    "IngestPlan",
    "IngestSummary",
    "assemble_manifest",
    "clear_staging",
    "finish_ingest",
    "ingest_catalog",
    "inspect_chunk",
    "load_metadata",
    "plan_ingest",
    "read_staged",
    "stage_chunk",
    "summarise",
]

#: Bump when the meaning of a staged chunk changes, so stale staging is never reused.
_STAGING_FORMAT = 1
#: Rejects that depend on a configured limit: re-inspected on every run, so raising
#: TIEFVISION_MAX_IMAGE_BYTES / _PIXELS takes effect without touching the files.
_LIMIT_REASONS = frozenset({"too_large", "too_many_pixels"})
_METADATA_KEYS = ("image", "path", "relative_path", "rel_path", "file", "file_name", "filename")


@dataclass(frozen=True)
class IngestChunk:
    """A slice of the source listing; ``chunk_id`` names its exact input set."""

    chunk_id: str
    items: tuple[ObjectInfo, ...]
    previous: Mapping[str, dict[str, object]] = field(default_factory=dict)

    @property
    def staging_key(self) -> str:
        return f"{STAGING_PREFIX}{self.chunk_id}.parquet"


@dataclass(frozen=True)
class IngestPlan:
    """What one ingest run will do: chunks to inspect and paths that disappeared.

    ``refused`` are the manifest rows of entries the listing refused to read (FIFOs, links
    that loop, dangle or lead out of the source); ``skipped`` the (path, reason) of entries
    left out without a row (hidden files, linked folders), counted in the summary.
    """

    source_uri: str
    chunks: tuple[IngestChunk, ...]
    removed: tuple[dict[str, object], ...]
    previous_version: str | None
    listed: int
    refused: tuple[dict[str, object], ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class IngestSummary:
    """Counts for one run; ``rejected`` counts only bytes this run found unusable.

    ``images`` and ``ok`` are the same count (usable images; ``images`` is kept for
    scripts); ``listed`` is every current entry of the source, usable or rejected;
    ``skipped`` the entries left out without a row, by reason in ``skipped_reasons``.
    """

    store_url: str
    version: str
    previous_version: str | None
    images: int
    new: int
    changed: int
    unchanged: int
    removed: int
    rejected: int
    rejects_total: int
    bytes_total: int
    manifest_uri: str
    rejects_uri: str
    reject_reasons: dict[str, int]
    ok: int = 0
    listed: int = 0
    skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _chunk_id(items: Sequence[ObjectInfo], previous: Mapping[str, dict], salt: str) -> str:
    digest = hashlib.sha256(salt.encode())
    for item in items:
        prev_sha = previous.get(item.key, {}).get("sha256") or ""
        digest.update(f"{item.key}\0{item.size}\0{item.version_tag}\0{prev_sha}\n".encode())
    return digest.hexdigest()[:32]


def plan_ingest(
    source: Store,
    store: Store,
    *,
    chunk_size: int = 256,
    workers: int = 1,
    verify_hashes: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    follow_symlinks: bool = False,
) -> IngestPlan:
    """List the source and split it into chunks; find paths that disappeared.

    Chunks are at most ``chunk_size`` images but small enough that every worker gets a few,
    so two cores stay busy even on a small catalog. Entries the listing refuses (see
    :func:`~tiefvision_core.catalog.sources.list_source`) become reject rows here, never read.
    """
    if chunk_size < 1:
        raise InputError("chunk_size must be at least 1")
    source_listing = list_source(source, follow_symlinks=follow_symlinks)
    listing = list(source_listing.entries)
    previous_table = read_manifest(store)
    previous_version = store.read_pointer(MANIFEST_CURRENT)
    previous: dict[str, dict[str, object]] = {}
    if previous_table is not None:
        for row in previous_table.to_pylist():
            previous[str(row["rel_path"])] = row
    listed = {item.key for item in listing} | {item.key for item in source_listing.refused}
    removed = tuple(row for path, row in previous.items() if path not in listed)
    now = datetime.now(UTC)
    refused = tuple(
        _refused_row(source, item, previous.get(item.key), now) for item in source_listing.refused
    )

    per_chunk = max(1, min(chunk_size, -(-len(listing) // max(1, workers * 4))))
    salt = (
        f"{_STAGING_FORMAT}|{source.uri()}|{verify_hashes}|{max_pixels}|{max_bytes}|"
        f"{previous_version}"
    )
    chunks = []
    for start in range(0, len(listing), per_chunk):
        items = tuple(listing[start : start + per_chunk])
        prev = {item.key: previous[item.key] for item in items if item.key in previous}
        chunks.append(IngestChunk(_chunk_id(items, prev, salt), items, prev))
    return IngestPlan(
        source.uri(),
        tuple(chunks),
        removed,
        previous_version,
        len(listed),
        refused,
        source_listing.skipped,
    )


def _new_row(
    source: Store, key: str, prev: Mapping[str, object] | None, now: datetime
) -> dict[str, object]:
    """The identity columns of a row for bytes (or an entry) this run judged afresh."""
    return {
        "image_id": image_id_for(key),
        "rel_path": key,
        "source_uri": source.uri(key),
        "change": "new" if prev is None or prev.get("status") == "removed" else "changed",
        "ingested_at": now,
    }


def _refused_row(
    source: Store, item: Refused, prev: Mapping[str, object] | None, now: datetime
) -> dict[str, object]:
    """A reject row for an entry never read; the same refusal as last run is unchanged."""
    if (
        prev is not None
        and prev.get("status") == "rejected"
        and (prev.get("reason"), prev.get("detail")) == (item.reason, item.detail)
    ):
        return {**{name: prev.get(name) for name in MANIFEST_COLUMNS}, "change": "unchanged"}
    row = _new_row(source, item.key, prev, now)
    row.update(status="rejected", reason=item.reason, detail=item.detail)
    return {name: row.get(name) for name in MANIFEST_COLUMNS}


def _same_verdict(row: Mapping[str, object], prev: Mapping[str, object]) -> bool:
    """A re-inspected limit reject that is still the same reject (not news to report)."""
    keys = ("status", "reason", "detail", "sha256", "bytes")
    return all(row.get(k) == prev.get(k) for k in keys)


def _carry(prev: Mapping[str, object], item: ObjectInfo, now: datetime) -> dict[str, object]:
    row = {name: prev.get(name) for name in MANIFEST_COLUMNS}
    was_removed = prev.get("status") == "removed"
    row.update(version_tag=item.version_tag, bytes=item.size)
    if was_removed:  # came back with the same bytes: usable again, and new to later stages
        ok = prev.get("reason") is None
        row.update(status="ok" if ok else "rejected", change="new", ingested_at=now)
    else:
        row["change"] = "unchanged"
    return row


def inspect_chunk(
    source: Store,
    chunk: IngestChunk,
    *,
    verify_hashes: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> pa.Table:
    """Hash and (only where the bytes are new) fully decode every image of a chunk.

    Never raises for a bad image: it becomes a ``rejected`` row with a reason code. Bytes are
    read through :meth:`Store.get_capped`: regular files only, at most ``max_bytes``.
    """
    now = datetime.now(UTC)
    rows = []
    for item in chunk.items:
        prev = chunk.previous.get(item.key)
        limit_bound = (
            prev is not None
            and prev.get("status") == "rejected"
            and prev.get("reason") in _LIMIT_REASONS
        )
        same_tag = (
            prev is not None
            and prev.get("version_tag") == item.version_tag
            and prev.get("bytes") == item.size
            and prev.get("status") != "removed"
        )
        if prev is not None and same_tag and not verify_hashes and not limit_bound:
            rows.append(_carry(prev, item, now))
            continue
        row = _new_row(source, item.key, prev, now)
        row.update(version_tag=item.version_tag, bytes=item.size)
        try:
            data = source.get_capped(item.key, max_bytes)
        except ImageRejected as rejected:
            row.update(status="rejected", reason=rejected.reason, detail=rejected.detail)
        except StorageNotFound:
            row.update(status="rejected", reason="vanished", detail="removed while ingest ran")
        else:
            sha = hashlib.sha256(data).hexdigest()
            if prev is not None and prev.get("sha256") == sha and not limit_bound:
                rows.append(_carry(prev, item, now))
                continue
            row.update(sha256=sha, bytes=len(data))
            row.update(_inspect(data, max_pixels))
        if prev is not None and limit_bound and same_tag and _same_verdict(row, prev):
            row = _carry(prev, item, now)
        rows.append(row)
    return pa.Table.from_pylist(
        [{name: row.get(name) for name in MANIFEST_COLUMNS} for row in rows],
        schema=MANIFEST_SCHEMA,
    )


def _inspect(data: bytes, max_pixels: int) -> dict[str, object]:
    """The verdict columns of a row: an ok image's size and format, or a reject's reason."""
    try:
        info = inspect_image(data, max_pixels=max_pixels)
    except ImageRejected as rejected:
        return {"status": "rejected", "reason": rejected.reason, "detail": rejected.detail}
    return {
        "status": "ok",
        "width": info.width,
        "height": info.height,
        "format": info.format,
        "mode": info.mode,
        "detail": "; ".join(info.warnings) or None,
    }


def stage_chunk(
    source: Store,
    store: Store,
    chunk: IngestChunk,
    *,
    verify_hashes: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> str:
    """Inspect a chunk unless an earlier (killed) run already staged it; returns its key."""
    if not store.exists(chunk.staging_key):
        table = inspect_chunk(
            source, chunk, verify_hashes=verify_hashes, max_pixels=max_pixels, max_bytes=max_bytes
        )
        store.write_parquet(chunk.staging_key, table)
    return chunk.staging_key


def read_staged(store: Store, keys: Iterable[str]) -> list[pa.Table]:
    return [store.read_parquet(key) for key in keys]


def clear_staging(store: Store) -> int:
    """Drop staged chunks once their manifest is published (they are only for resuming)."""
    return store.delete_prefix(STAGING_PREFIX)


def load_metadata(path: str | Path) -> pd.DataFrame:
    """Read catalog metadata (CSV or Parquet) keyed by relative path or file name.

    Returns a frame with a ``_key`` column plus the metadata columns as strings. Raises
    :class:`InputError` with the accepted key names when no key column is found.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"metadata file {path} does not exist: pass a CSV or Parquet file")
    if path.suffix.lower() == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    key = next((name for name in _METADATA_KEYS if name in frame.columns), None)
    if key is None:
        raise InputError(
            f"metadata file {path} has no key column: name one of {', '.join(_METADATA_KEYS)} "
            "(the image's path relative to the ingested folder, or its file name)"
        )
    clash = sorted(set(frame.columns) & set(MANIFEST_COLUMNS) - {key})
    if clash:
        raise InputError(
            f"metadata file {path} has columns reserved by the manifest: {', '.join(clash)}; "
            "rename them"
        )
    frame = frame.astype(str).rename(columns={key: "_key"})
    frame["_key"] = frame["_key"].str.replace("\\", "/", regex=False).str.lstrip("./")
    if frame["_key"].duplicated().any():
        dup = frame.loc[frame["_key"].duplicated(), "_key"].iloc[0]
        raise InputError(f"metadata file {path} names {dup!r} twice: keep one row per image")
    return frame


def _join_metadata(manifest: pd.DataFrame, metadata: pd.DataFrame) -> pd.DataFrame:
    """Join on the relative path; fall back to the file name when that is unambiguous."""
    import pandas as pd

    columns = [c for c in metadata.columns if c != "_key"]
    by_key = metadata.set_index("_key")[columns]
    joined = by_key.reindex(manifest["rel_path"]).set_axis(manifest.index)
    names = manifest["rel_path"].map(posixpath.basename)
    unique_names = ~names.duplicated(keep=False)
    by_name = by_key.reindex(names).set_axis(manifest.index)
    fill = joined.isna().all(axis=1) & unique_names
    joined.loc[fill] = by_name.loc[fill]
    return pd.concat([manifest, joined], axis=1)


def assemble_manifest(
    inspected: Iterable[pa.Table],
    plan: IngestPlan,
    *,
    previous: pa.Table | None = None,
    metadata: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The next manifest: inspected rows + removed rows, with catalog metadata joined.

    Without new metadata, rows keep the metadata columns the previous manifest had, so a
    nightly run that does not pass ``--metadata`` loses nothing.
    """
    import pandas as pd

    now = datetime.now(UTC)
    tables = list(inspected)
    if plan.refused:
        tables.append(pa.Table.from_pylist(list(plan.refused), schema=MANIFEST_SCHEMA))
    frame = (
        pa.concat_tables(tables).to_pandas()
        if tables
        else MANIFEST_SCHEMA.empty_table().to_pandas()
    )
    if plan.removed:
        gone = pd.DataFrame([{n: r.get(n) for n in MANIFEST_COLUMNS} for r in plan.removed])
        newly = gone["status"] != "removed"
        gone.loc[newly, "ingested_at"] = now
        gone["change"] = ["removed" if flag else "unchanged" for flag in newly]
        gone["status"] = "removed"
        frame = pd.concat([frame, gone], ignore_index=True) if len(frame) else gone
    if metadata is not None:
        frame = _join_metadata(frame, metadata)
    elif previous is not None:
        extra = [c for c in previous.column_names if c not in MANIFEST_COLUMNS]
        if extra:
            prev = previous.select(["image_id", *extra]).to_pandas()
            frame = frame.merge(prev, on="image_id", how="left")
    return frame.sort_values("rel_path", kind="stable").reset_index(drop=True)


def summarise(
    store: Store,
    frame: pd.DataFrame,
    published: ManifestVersion,
    previous_version: str | None,
    skipped: Sequence[tuple[str, str]] = (),
) -> IngestSummary:
    change, status = frame["change"], frame["status"]
    usable = int((status == "ok").sum())
    skipped_reasons: dict[str, int] = {}
    for _, reason in skipped:
        skipped_reasons[reason] = skipped_reasons.get(reason, 0) + 1
    fresh = change.isin(["new", "changed"])
    current = status != "removed"
    reasons = frame.loc[status == "rejected", "reason"].value_counts()
    return IngestSummary(
        store_url=store.uri(),
        version=published.version,
        previous_version=previous_version,
        images=usable,
        new=int(((change == "new") & (status == "ok")).sum()),
        changed=int(((change == "changed") & (status == "ok")).sum()),
        unchanged=int(((change == "unchanged") & current).sum()),
        removed=int((change == "removed").sum()),
        rejected=int((fresh & (status == "rejected")).sum()),
        rejects_total=int((status == "rejected").sum()),
        bytes_total=int(frame.loc[current, "bytes"].sum()),
        manifest_uri=published.manifest_uri,
        rejects_uri=published.rejects_uri,
        reject_reasons={str(k): int(v) for k, v in reasons.items()},
        ok=usable,
        listed=int(current.sum()),
        skipped=len(skipped),
        skipped_reasons=skipped_reasons,
    )


def finish_ingest(
    store: Store, plan: IngestPlan, staged_keys: Sequence[str], metadata: str | Path | None = None
) -> IngestSummary:
    """Assemble the next manifest from staged chunks, publish it, then drop the staging."""
    previous = read_manifest(store, plan.previous_version)
    frame = assemble_manifest(
        read_staged(store, staged_keys),
        plan,
        previous=previous,
        metadata=load_metadata(metadata) if metadata else None,
    )
    published = publish_manifest(store, frame)
    clear_staging(store)
    return summarise(store, frame, published, plan.previous_version, plan.skipped)


def ingest_catalog(
    source: Store,
    store: Store,
    *,
    metadata: str | Path | None = None,
    chunk_size: int = 256,
    verify_hashes: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    follow_symlinks: bool = False,
) -> IngestSummary:
    """The whole ingest in one process: the Python API behind ``tiefvision ingest``.

    The Prefect flow runs the same three steps with the chunks in parallel.
    """
    plan = plan_ingest(
        source,
        store,
        chunk_size=chunk_size,
        verify_hashes=verify_hashes,
        max_pixels=max_pixels,
        max_bytes=max_bytes,
        follow_symlinks=follow_symlinks,
    )
    stage = functools.partial(
        stage_chunk,
        source,
        store,
        verify_hashes=verify_hashes,
        max_pixels=max_pixels,
        max_bytes=max_bytes,
    )
    keys = [stage(chunk) for chunk in plan.chunks]
    return finish_ingest(store, plan, keys, metadata)
