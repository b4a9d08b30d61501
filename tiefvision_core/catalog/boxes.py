"""The located boxes of the catalog on storage: what the locate stage writes and every
later stage (encoding, gc, training) reads.

Why here, below the locator: reading boxes needs only Parquet and the manifest, so the
encoding stage reads them without importing the locator (and its torch model code), and
no stage reaches into another's package for them. Each function takes the run's catalog
snapshot (``catalog=``), so one run reads the manifest once and the current locator's box
parts once.

    boxes/<locator version>/part-<id>.parquet   one row per (image, sha256), see docs/formats.md
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, SupportsInt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tiefvision_core.catalog.manifest import usable_rows
from tiefvision_core.catalog.snapshot import CatalogSnapshot, catalog_snapshot
from tiefvision_core.storage.layout import LOCATOR_CURRENT, boxes_prefix
from tiefvision_core.storage.stores import Store

if TYPE_CHECKING:  # pandas is imported where a frame is built: a no-op plan never pays it
    import pandas as pd

__all__ = [
    "Box",
    "as_box",
    "latest_boxes",
    "located_boxes",
    "part_keys",
    "read_boxes",
    "reuse_boxes",
]

Box = tuple[int, int, int, int]
_COLUMNS = ["image_id", "sha256", "left", "top", "right", "bottom", "score"]
_BOX_COLUMNS = [*_COLUMNS, "positions_kept", "fallback", "low_confidence"]


def as_box(values: Iterable[SupportsInt]) -> Box:
    """(left, top, right, bottom) as ints, from a box as Parquet, JSON or NumPy holds it."""
    left, top, right, bottom = (int(v) for v in values)
    return left, top, right, bottom


def part_keys(store: Store, prefix: str) -> list[str]:
    """The finished ``part-*.parquet`` files under ``prefix``."""
    return [
        info.key
        for info in store.list(prefix)
        if info.key.rsplit("/", 1)[-1].startswith("part-") and info.key.endswith(".parquet")
    ]


def read_boxes(
    store: Store,
    version: str,
    *,
    current_only: bool = True,
    catalog: CatalogSnapshot | None = None,
    keys: list[str] | None = None,
) -> pd.DataFrame:
    """Located boxes of one locator version as image_id, sha256, left…bottom, score,
    positions_kept, fallback, low_confidence (rejects excluded; only images still in the
    catalog, by the run's snapshot ``catalog`` when given, else the store's current one).
    ``keys``: its part files when the caller listed them already.

    Parts written before the ``low_confidence`` column existed (a locate run resumed across
    the upgrade mixes both) are promoted to the newer schema; their rows read as False.
    """
    import pandas as pd

    keys = part_keys(store, boxes_prefix(version)) if keys is None else keys
    if not keys:
        return pd.DataFrame(columns=_BOX_COLUMNS)
    table = pa.concat_tables((store.read_parquet(k) for k in keys), promote_options="default")
    frame = table.filter(pc.is_null(table["reason"])).to_pandas()
    flags = frame["low_confidence"] if "low_confidence" in frame else pd.Series(False, frame.index)
    frame["low_confidence"] = flags.fillna(False).astype(bool)
    boxes = np.stack(frame["box"].to_numpy()) if len(frame) else np.zeros((0, 4))
    frame[["left", "top", "right", "bottom"]] = boxes.astype(int)
    if current_only:
        manifest = catalog_snapshot(store, catalog).manifest
        if manifest is not None:
            ok = usable_rows(manifest).select(["image_id", "sha256"])
            frame = frame.merge(ok.to_pandas(), on=["image_id", "sha256"])
    return frame[_BOX_COLUMNS].sort_values("image_id")


def latest_boxes(store: Store, *, catalog: CatalogSnapshot | None = None) -> pd.DataFrame | None:
    """Boxes of the current locator, or None when there is none (later stages then use the
    whole image). Read once per snapshot and set of part files: the stages of one run
    (plan the encodings, filter them for the index) share one read."""
    version = store.read_pointer(LOCATOR_CURRENT)
    if version is None:
        return None
    snapshot = catalog_snapshot(store, catalog)
    keys = part_keys(store, boxes_prefix(version))
    return snapshot.remember(
        ("latest_boxes", version, tuple(keys)),
        lambda: read_boxes(store, version, catalog=snapshot, keys=keys),
    )


def located_boxes(
    store: Store, *, catalog: CatalogSnapshot | None = None
) -> dict[tuple[str, str], Box]:
    """(image_id, sha256) → box of the current locator (fallback rows are the whole image
    already); empty when no locator exists yet."""
    boxes = latest_boxes(store, catalog=catalog)
    if boxes is None or boxes.empty:
        return {}
    coords = boxes[["left", "top", "right", "bottom"]].astype(int).itertuples(index=False)
    return {
        (i, s): tuple(b) for i, s, b in zip(boxes["image_id"], boxes["sha256"], coords, strict=True)
    }


def reuse_boxes(
    store: Store, prefix: str, missing: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Give the photos ``missing`` (image_id, sha256) a box under ``prefix`` (one locator's
    boxes) wherever that locator already boxed the same bytes under another id: a copy of
    that row with the new id, written as one part named by its input set. Returns the
    pairs served so.

    Why: a box is a function of the bytes and the locator, not of the path. A photo renamed
    or moved in the source (new id, same sha256) would otherwise be decoded, encoded at
    every scale and located again for the box it already has.
    """
    keys = part_keys(store, prefix)
    if not keys or not missing:
        return set()
    parts = pa.concat_tables((store.read_parquet(k) for k in keys), promote_options="default")
    located = parts.filter(pc.is_null(parts["reason"]))
    by_bytes: dict[str, dict] = {}
    for row in located.to_pylist():
        by_bytes.setdefault(row["sha256"], row)
    rows = [{**by_bytes[sha], "image_id": i} for i, sha in missing if sha in by_bytes]
    if not rows:
        return set()
    served = [(row["image_id"], row["sha256"]) for row in rows]
    ident = json.dumps(["reused", prefix, served])
    key = f"{prefix}part-{hashlib.sha256(ident.encode()).hexdigest()[:24]}.parquet"
    if not store.exists(key):
        store.write_parquet(key, pa.Table.from_pylist(rows, schema=located.schema))
    return set(served)
