"""Encodings on storage: which images still need encoding, and the Parquet shard format.

Layout (see ``docs/formats.md``)::

    encodings/<encoder>/<kind>/<encoder_version>/shard-<id>.parquet   one row per (image, box, flip)
    encodings/<encoder>/<kind>/<encoder_version>/_plans/<id>.parquet  the work list of a run

A shard is named by its exact input set (encoder version, dtype, and the image ids, hashes
and boxes it holds) and written in one atomic put, so a rerun skips shards that exist and a
killed run leaves only complete shards behind. Images whose bytes cannot be used at this
stage are rows with a ``reason`` and no vector: they count as done for that sha256 (the same
bytes would fail again), and the next ingest gives changed bytes a new sha256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass
from typing import Literal, SupportsInt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tiefvision_core.catalog.boxes import Box, as_box, located_boxes
from tiefvision_core.catalog.manifest import usable_rows
from tiefvision_core.catalog.snapshot import CatalogSnapshot, catalog_snapshot
from tiefvision_core.encoders import Encoder
from tiefvision_core.encoding.requests import CropRequest, EncodedBatch
from tiefvision_core.errors import ConfigError, InputError
from tiefvision_core.storage.layout import encodings_prefix
from tiefvision_core.storage.stores import Store

__all__ = [
    "KINDS",
    "EncodePlan",
    "RowKey",
    "ShardResult",
    "ShardSpec",
    "VectorDType",
    "build_shard",
    "current_boxes",
    "encoded_keys",
    "load_requests",
    "plan_encoding",
    "read_encodings",
    "reuse_encodings",
    "row_key",
    "row_keys",
    "shard_prefix",
    "vectors_as_maps",
]

#: ``grid``: the whole image resized to the canonical square. ``box``: the product's box from
#: the current locator (the whole image where there is no locator or no box yet) resized to
#: the canonical square — what similarity search compares.
KINDS = ("grid", "box")
VectorDType = Literal["float16", "float32"]
_PLAN_COLUMNS = ("image_id", "sha256", "uri", "width", "height", "box")
_KEY_COLUMNS = ["image_id", "sha256", "box"]


def shard_prefix(encoder: str, kind: str, version: str) -> str:
    if kind not in KINDS:
        raise ConfigError(f"unknown encoding kind {kind!r}: choose one of {', '.join(KINDS)}")
    return encodings_prefix(encoder, kind, version)


@dataclass(frozen=True)
class ShardSpec:
    """A slice ``[start, stop)`` of a run's work list, named by its input set."""

    shard_id: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class EncodePlan:
    """What one encoding run does. Small: the work list itself stays on storage."""

    prefix: str
    plan_key: str | None
    shards: tuple[ShardSpec, ...]
    images: int  # usable images in the manifest
    already_encoded: int  # reused ones included
    reused: int = 0  # served by copying the rows of the same bytes under another id

    def shard_key(self, spec: ShardSpec) -> str:
        return f"{self.prefix}shard-{spec.shard_id}.parquet"

    @property
    def to_encode(self) -> int:
        return sum(spec.size for spec in self.shards)


@dataclass(frozen=True)
class ShardResult:
    key: str
    encoded: int  # images encoded (rows without a reason, flips not counted twice)
    rejected: int
    seconds: float
    skipped: bool = False
    reject_reasons: tuple[tuple[str, int], ...] = ()

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


RowKey = tuple[str, str, tuple[int, int, int, int]]  # image_id, sha256, box


def row_key(image_id: str, sha256: str, box: Iterable[SupportsInt]) -> RowKey:
    """One row's key; the box as four ints, whatever it was read as (list, array)."""
    return image_id, sha256, as_box(box)


def row_keys(table: pa.Table) -> list[RowKey]:
    """(image_id, sha256, box) of every row of a table with those columns."""
    return [
        row_key(image_id, sha, box)
        for image_id, sha, box in zip(*(table[c].to_pylist() for c in _KEY_COLUMNS), strict=True)
    ]


def encoded_keys(store: Store, prefix: str) -> set[RowKey]:
    """(image_id, sha256, box) of every row already stored under ``prefix`` (rejects too)."""
    done: set[RowKey] = set()
    for info in store.list(prefix):
        name = info.key.rsplit("/", 1)[-1]
        if name.startswith("shard-") and name.endswith(".parquet"):
            done.update(row_keys(store.read_parquet(info.key, columns=_KEY_COLUMNS)))
    return done


def plan_encoding(
    store: Store,
    encoder: Encoder,
    *,
    kind: str = "grid",
    shard_size: int = 256,
    flips: bool = False,
    dtype: VectorDType = "float16",
    catalog: CatalogSnapshot | None = None,
) -> EncodePlan:
    """Select manifest images without an encoding for (sha256, encoder version, box) and
    split them into content-named shards. The work list is written to storage once.
    ``catalog``: the run's snapshot of the catalog (the current one when not given)."""
    if shard_size < 1:
        raise ConfigError("--shard-size must be at least 1")
    prefix = shard_prefix(encoder.name, kind, encoder.version)
    catalog = catalog_snapshot(store, catalog)
    manifest = catalog.manifest
    if manifest is None:
        raise InputError("the catalog is empty: run `tiefvision ingest --images DIR` first")
    usable = usable_rows(manifest)
    done = encoded_keys(store, prefix)
    located = located_boxes(store, catalog=catalog) if kind == "box" else {}
    missing = []
    for row in usable.select(["image_id", "sha256", "source_uri", "width", "height"]).to_pylist():
        whole = (0, 0, int(row["width"]), int(row["height"]))
        box = located.get((row["image_id"], row["sha256"]), whole)
        if (row["image_id"], row["sha256"], box) not in done:
            missing.append({**row, "uri": row.pop("source_uri"), "box": list(box)})
    encoded_bytes = {(sha, box) for _, sha, box in done}  # read once: skip hopeless reuse
    reusable = [k for k in map(_key_of, missing) if (k[1], k[2]) in encoded_bytes]
    reused = reuse_encodings(store, prefix, reusable)
    if kind == "box" and not flips:
        reused |= _whole_photos_from_grid(store, encoder, prefix, missing, reused, dtype)
    rows = sorted((r for r in missing if _key_of(r) not in reused), key=lambda r: r["image_id"])
    if not rows:
        return EncodePlan(prefix, None, (), usable.num_rows, usable.num_rows, len(reused))
    salt = json.dumps([encoder.version, kind, dtype, flips])
    work = pa.Table.from_pylist([{c: r[c] for c in _PLAN_COLUMNS} for r in rows])
    plan_id = hashlib.sha256((salt + json.dumps(work.to_pylist())).encode()).hexdigest()[:24]
    plan_key = f"{prefix}_plans/{plan_id}.parquet"
    if not store.exists(plan_key):
        store.write_parquet(plan_key, work)
    shards = []
    for start in range(0, len(rows), shard_size):
        part = rows[start : start + shard_size]
        ident = json.dumps([salt, [(r["image_id"], r["sha256"], r["box"]) for r in part]])
        shard_id = hashlib.sha256(ident.encode()).hexdigest()[:24]
        shards.append(ShardSpec(shard_id, start, start + len(part)))
    return EncodePlan(
        prefix, plan_key, tuple(shards), usable.num_rows, usable.num_rows - len(rows), len(reused)
    )


def _whole_photos_from_grid(
    store: Store,
    encoder: Encoder,
    prefix: str,
    missing: list[dict],
    reused: set[RowKey],
    dtype: VectorDType,
) -> set[RowKey]:
    """Box-crop keys whose box is the whole photo, served by copying the photo's ``grid``
    row: the grid encoding *is* the whole photo resized to the encoder's square, the same
    input (hence the same vector) as a whole-photo box crop. Why: without a locator (or
    where it fell back) ``rebuild-index`` would otherwise encode every photo a second time
    after ``encode`` did. Only grid shards of the same vector dtype are copied from, so a
    box shard never mixes dtypes."""
    wanted = [
        _key_of(row)
        for row in missing
        if list(row["box"]) == [0, 0, int(row["width"]), int(row["height"])]
        and _key_of(row) not in reused
    ]
    if not wanted:
        return set()
    grid = shard_prefix(encoder.name, "grid", encoder.version)
    return reuse_encodings(store, prefix, wanted, source=grid, dtype=dtype)


def _key_of(row: dict) -> RowKey:
    return row_key(row["image_id"], row["sha256"], row["box"])


def reuse_encodings(
    store: Store,
    prefix: str,
    missing: Iterable[RowKey],
    *,
    source: str | None = None,
    dtype: VectorDType | None = None,
) -> set[RowKey]:
    """Give the keys ``missing`` (image_id, sha256, box) an encoding under ``prefix`` (one
    encoder version and kind) wherever the same bytes and box are encoded under another id:
    that id's rows (mirror included), copied with the new id into a shard named by its
    input set. Returns the keys served so. ``source``: the prefix to copy from (default
    ``prefix``; another kind of the same encoder version where the inputs are the same);
    ``dtype``: copy only from shards whose vectors have this dtype.

    Why: an encoding is a function of (sha256, encoder version, box), not of the path. A
    photo renamed or moved in the source (new id, same sha256) must not be decoded and
    encoded again; gc later drops the old id's rows, so the copy is what stays.
    """
    targets: dict[tuple[str, Box], list[str]] = {}
    for image_id, sha, box in missing:
        targets.setdefault((sha, box), []).append(image_id)
    served: set[RowKey] = set()
    sources: dict[tuple[str, Box], tuple[str, str]] = {}  # bytes → (shard, id) copied
    for info in sorted(store.list(source or prefix), key=lambda i: i.key):
        name = info.key.rsplit("/", 1)[-1]
        if targets and name.startswith("shard-") and name.endswith(".parquet"):
            keys = store.read_parquet(info.key, [*_KEY_COLUMNS, "reason"])
            if dtype is not None and _vector_dtype(keys) != dtype:
                continue
            take, ids = _rows_to_copy(info.key, keys, targets, sources)
            if take:
                served |= _copy_rows(store, prefix, info.key, take, ids)
    return served


def _vector_dtype(table: pa.Table) -> str | None:
    """The vector dtype a shard's schema metadata records (``float16``/``float32``)."""
    layout = (table.schema.metadata or {}).get(b"tiefvision.vector_layout")
    return None if layout is None else str(json.loads(layout).get("dtype"))


def _rows_to_copy(
    shard: str,
    keys: pa.Table,
    targets: dict[tuple[str, Box], list[str]],
    sources: dict[tuple[str, Box], tuple[str, str]],
) -> tuple[list[int], list[str]]:
    """Which rows of ``shard`` to copy (a row once per target id) and the ids they get. The
    first (shard, id) holding some bytes is their only source: copying a duplicate photo's
    rows as well would give a target two rows per flip."""
    take: list[int] = []
    ids: list[str] = []
    reasons = keys["reason"].to_pylist()
    for n, (image_id, sha, box) in enumerate(row_keys(keys)):
        copied = (sha, box)
        if reasons[n] is not None or copied not in targets:
            continue
        if sources.setdefault(copied, (shard, image_id)) == (shard, image_id):
            take += [n] * len(targets[copied])
            ids += targets[copied]
    return take, ids


def _copy_rows(store: Store, prefix: str, key: str, take: list[int], ids: list[str]) -> set[RowKey]:
    """Rows ``take`` of shard ``key`` with ``image_id`` set to ``ids``, as a new shard."""
    table = store.read_parquet(key).take(pa.array(take, pa.int64()))
    column = table.schema.get_field_index("image_id")
    table = table.set_column(column, "image_id", pa.array(ids, pa.string()))
    copied = row_keys(table)
    ident = json.dumps(["reused", key, take, ids])
    new_key = f"{prefix}shard-{hashlib.sha256(ident.encode()).hexdigest()[:24]}.parquet"
    if not store.exists(new_key):
        store.write_parquet(new_key, table, plain_columns=("vector",))
    return set(copied)


def load_requests(store: Store, plan_key: str, spec: ShardSpec) -> list[CropRequest]:
    table = store.read_parquet(plan_key).slice(spec.start, spec.size)
    return [CropRequest.of_row(r, box=as_box(r["box"])) for r in table.to_pylist()]


def _schema(encoder: Encoder, dtype: VectorDType, length: int) -> pa.Schema:
    value = pa.float16() if dtype == "float16" else pa.float32()
    grid_h, grid_w = encoder.geometry.grid
    metadata = {
        "tiefvision.encoder": json.dumps(encoder.describe()),
        "tiefvision.vector_layout": json.dumps(
            {"order": "HWC", "grid": [grid_h, grid_w], "channels": encoder.channels, "dtype": dtype}
        ),
    }
    return pa.schema(
        [
            ("image_id", pa.string()),
            ("sha256", pa.string()),
            ("encoder", pa.string()),
            ("encoder_version", pa.string()),
            ("box", pa.list_(pa.int32(), 4)),
            ("flipped", pa.bool_()),
            ("grid_h", pa.int16()),
            ("grid_w", pa.int16()),
            ("channels", pa.int32()),
            ("vector", pa.list_(value, length)),
            ("reason", pa.string()),
            ("detail", pa.string()),
        ],
        metadata=metadata,
    )


def build_shard(
    encoder: Encoder, batches: Iterable[EncodedBatch], *, dtype: VectorDType = "float16"
) -> tuple[pa.Table, int, int, dict[str, int]]:
    """Rows of one shard from streamed batches: (table, encoded images, rejects, reasons).

    Vectors are stored position-major (``HWC``): position ``(y, x)`` is the contiguous slice
    ``[(y*W + x)*C, (y*W + x + 1)*C)``, so per-position maths needs only a reshape.
    """
    grid_h, grid_w = encoder.geometry.grid
    length = grid_h * grid_w * encoder.channels
    numpy_dtype = np.float16 if dtype == "float16" else np.float32
    columns: dict[str, list] = {name: [] for name in _schema(encoder, dtype, length).names}
    vectors: list[np.ndarray] = []
    encoded = rejected = 0
    reasons: dict[str, int] = {}

    def add(request: CropRequest, flipped: bool, reason: str | None, detail: str | None) -> None:
        columns["image_id"].append(request.image_id)
        columns["sha256"].append(request.sha256)
        columns["box"].append(list(request.full_box))
        columns["flipped"].append(flipped)
        columns["reason"].append(reason)
        columns["detail"].append(detail)

    for batch in batches:
        for request, flipped in zip(batch.requests, batch.flipped, strict=True):
            add(request, bool(flipped), None, None)
            encoded += not flipped
        if len(batch.requests):
            if batch.maps.shape[2:] != (grid_h, grid_w):
                raise ValueError(f"maps of grid {batch.maps.shape[2:]} != {(grid_h, grid_w)}")
            hwc = batch.maps.transpose(0, 2, 3, 1).reshape(len(batch.requests), length)
            vectors.append(hwc.astype(numpy_dtype))
        for request, reason, detail in batch.rejects:
            add(request, False, reason, detail)
            vectors.append(np.zeros((1, length), numpy_dtype))
            rejected += 1
            reasons[reason] = reasons.get(reason, 0) + 1
    rows = len(columns["image_id"])
    flat = np.concatenate(vectors).reshape(-1) if vectors else np.zeros(0, numpy_dtype)
    valid = np.array([r is None for r in columns["reason"]], dtype=bool)
    vector_array = pa.FixedSizeListArray.from_arrays(
        pa.array(flat), length, mask=pa.array(~valid) if rows else None
    )
    schema = _schema(encoder, dtype, length)
    arrays = {
        "image_id": pa.array(columns["image_id"], pa.string()),
        "sha256": pa.array(columns["sha256"], pa.string()),
        "encoder": pa.array([encoder.name] * rows, pa.string()),
        "encoder_version": pa.array([encoder.version] * rows, pa.string()),
        "box": pa.array(columns["box"], pa.list_(pa.int32(), 4)),
        "flipped": pa.array(columns["flipped"], pa.bool_()),
        "grid_h": pa.array([grid_h] * rows, pa.int16()),
        "grid_w": pa.array([grid_w] * rows, pa.int16()),
        "channels": pa.array([encoder.channels] * rows, pa.int32()),
        "vector": vector_array,
        "reason": pa.array(columns["reason"], pa.string()),
        "detail": pa.array(columns["detail"], pa.string()),
    }
    table = pa.Table.from_arrays([arrays[name] for name in schema.names], schema=schema)
    return table, encoded, rejected, reasons


def read_encodings(
    store: Store,
    encoder: str,
    version: str,
    *,
    kind: str = "grid",
    columns: list[str] | None = None,
    current_only: bool = True,
    only: Collection[RowKey] | None = None,
    catalog: CatalogSnapshot | None = None,
) -> pa.Table:
    """All encoded rows (rejects excluded) of one encoder version.

    ``current_only`` keeps rows whose (image_id, sha256) is usable in the current manifest,
    so images that changed or were removed since they were encoded drop out. ``only`` keeps
    the rows of these (image_id, sha256, box) keys: each shard's key columns are read first,
    and the other columns (the vectors) only from shards that hold one of them — an
    incremental index update reads the encodings of what changed, not of the catalog.
    ``catalog``: the run's snapshot of the catalog (the current one when not given).
    """
    prefix = shard_prefix(encoder, kind, version)
    wanted = (
        None if columns is None else sorted({*columns, "image_id", "sha256", "flipped", "reason"})
    )
    wanted_keys = None if only is None else set(only)
    tables = []
    for info in store.list(prefix):
        if not info.key.rsplit("/", 1)[-1].startswith("shard-"):
            continue
        if wanted_keys is None:
            tables.append(store.read_parquet(info.key, wanted))
            continue
        keys = row_keys(store.read_parquet(info.key, _KEY_COLUMNS))
        hit = pa.array([key in wanted_keys for key in keys], pa.bool_())
        if pc.any(hit).as_py():
            tables.append(store.read_parquet(info.key, wanted).filter(hit))
    if not tables:
        return pa.table({})
    table = pa.concat_tables(tables)
    table = table.filter(pc.is_null(table["reason"]))
    snapshot = catalog_snapshot(store, catalog) if current_only or kind == "box" else None
    manifest = None if snapshot is None else snapshot.manifest
    if current_only and manifest is not None:
        ok = usable_rows(manifest)
        current = pc.binary_join_element_wise(ok["image_id"], ok["sha256"], "\0")
        keys = pc.binary_join_element_wise(table["image_id"], table["sha256"], "\0")
        table = table.filter(pc.is_in(keys, value_set=current))
    if snapshot is not None and kind == "box":
        table = _current_boxes_only(store, table, snapshot)
    return table.sort_by([("image_id", "ascending"), ("flipped", "ascending")])


def current_boxes(
    store: Store, *, catalog: CatalogSnapshot | None = None
) -> dict[tuple[str, str], Box] | None:
    """(image_id, sha256) → the box its box crop is encoded with now: the current
    locator's box, else the whole photo; usable photos only (a reject has no size). None
    before the first ingest. ``catalog``: the run's snapshot of the catalog."""
    catalog = catalog_snapshot(store, catalog)
    manifest = catalog.manifest
    if manifest is None:
        return None
    expected = {
        (r["image_id"], r["sha256"]): (0, 0, int(r["width"]), int(r["height"]))
        for r in usable_rows(manifest).select(["image_id", "sha256", "width", "height"]).to_pylist()
    }
    located = located_boxes(store, catalog=catalog)
    expected.update((k, v) for k, v in located.items() if k in expected)
    return expected


def _current_boxes_only(store: Store, table: pa.Table, catalog: CatalogSnapshot) -> pa.Table:
    """A photo re-located by a newer locator keeps its old rows on storage; only the rows of
    its current box (the whole image when it has none) count."""
    expected = current_boxes(store, catalog=catalog)  # None before the first ingest
    if expected is None:
        return table
    keys = zip(table["image_id"].to_pylist(), table["sha256"].to_pylist(), strict=True)
    keep = [
        expected.get(key) == as_box(box)
        for key, box in zip(keys, table["box"].to_pylist(), strict=True)
    ]
    return table.filter(pa.array(keep, pa.bool_()))


def vectors_as_maps(table: pa.Table) -> np.ndarray:
    """The ``vector`` column as float32 maps (N, C, H, W), undoing the HWC layout."""
    if table.num_rows == 0:
        return np.zeros((0, 0, 0, 0), np.float32)
    grid_h, grid_w = int(table["grid_h"][0].as_py()), int(table["grid_w"][0].as_py())
    channels = int(table["channels"][0].as_py())
    flat = table["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.float32).reshape(-1, grid_h, grid_w, channels).transpose(0, 3, 1, 2)
