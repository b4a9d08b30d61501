"""Frozen, content-addressed copies of the annotations on storage (what a model was trained
on): the rows joined with the current manifest, the key the digest of the sorted rows.

Annotations of images no longer usable are left out, and so are stale ones, drawn on other
bytes than the photo has now: a box of the old photo would teach the locator a wrong box
for the new one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from tiefvision_core.annotations.files import Box, CatalogImage, CatalogIndex, box_problem
from tiefvision_core.annotations.schema import TRIPLET_IDS
from tiefvision_core.storage.layout import SNAPSHOT_PREFIX

if TYPE_CHECKING:
    from tiefvision_core.storage.stores import Store

__all__ = ["SNAPSHOT_KINDS", "Snapshot", "read_snapshot", "write_snapshot"]

SNAPSHOT_KINDS = ("boxes", "triplets")
#: Bump when the meaning of a snapshot's rows changes: the digest then changes too.
_SNAPSHOT_FORMAT = 1


@dataclass(frozen=True)
class Snapshot:
    """A frozen, content-addressed copy of the annotations on storage. ``left_out`` counts
    annotations of images that are no longer usable in the current manifest, ``stale``
    those drawn on other bytes than the photo has now (left out until confirmed)."""

    key: str
    digest: str
    rows: int
    kind: str
    left_out: int = 0
    stale: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def write_snapshot(
    store: Store, kind: str, annotations: pd.DataFrame, catalog: CatalogIndex
) -> Snapshot:
    """``annotations`` (every box, or every triplet, as the database lists them) as a
    Parquet snapshot under ``annotations/snapshots/``, joined with ``catalog`` (the current
    manifest); nothing is written when a snapshot of the same rows is there already."""
    rows, left_out, stale = (
        _box_rows(annotations, catalog) if kind == "boxes" else _triplet_rows(annotations, catalog)
    )
    schema = _SNAPSHOT_SCHEMAS[kind]
    canonical = json.dumps(
        {
            "format": _SNAPSHOT_FORMAT,
            "kind": kind,
            "columns": schema.names,
            "rows": [[row[name] for name in schema.names] for row in rows],
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    snapshot = Snapshot(
        f"{SNAPSHOT_PREFIX}{kind}-{digest[:16]}.parquet",
        digest,
        len(rows),
        kind,
        left_out,
        stale,
    )
    if not store.exists(snapshot.key):
        meta = {"format": _SNAPSHOT_FORMAT, "kind": kind, "digest": digest, "rows": len(rows)}
        table = pa.Table.from_pylist(rows, schema=schema).replace_schema_metadata(
            {"tiefvision.snapshot": json.dumps(meta)}
        )
        store.write_parquet(snapshot.key, table)
    return snapshot


_SNAPSHOT_SCHEMAS = {
    "boxes": pa.schema(
        [
            ("image_id", pa.string()),
            ("sha256", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("left", pa.int32()),
            ("top", pa.int32()),
            ("right", pa.int32()),
            ("bottom", pa.int32()),
            ("source", pa.string()),
        ]
    ),
    "triplets": pa.schema(
        [
            ("reference", pa.string()),
            ("positive", pa.string()),
            ("negative", pa.string()),
            ("reference_sha256", pa.string()),
            ("positive_sha256", pa.string()),
            ("negative_sha256", pa.string()),
            ("source", pa.string()),
        ]
    ),
}


def _drawn_on_other_bytes(recorded: object, image: CatalogImage) -> bool:
    """A recorded sha256 (None or NaN: not recorded) that is not the image's current one."""
    return isinstance(recorded, str) and recorded != image.sha256


def _box_rows(frame: pd.DataFrame, catalog: CatalogIndex) -> tuple[list[dict], int, int]:
    """Snapshot rows of usable, fresh boxes; (rows, left out as unusable, left out as stale)."""
    rows, left_out, stale = [], 0, 0
    for record in frame.to_dict("records"):
        image = catalog.get(record["image_id"])
        box = Box(
            int(record["left"]), int(record["top"]), int(record["right"]), int(record["bottom"])
        )
        if image is None or box_problem(box, image):
            left_out += 1
            continue
        if _drawn_on_other_bytes(record["sha256"], image):
            stale += 1
            continue
        rows.append(
            {"image_id": image.image_id, "sha256": image.sha256}
            | {"width": image.width, "height": image.height}
            | box._asdict()
            | {"source": record["source"]}
        )
    return sorted(rows, key=lambda row: row["image_id"]), left_out, stale


def _triplet_rows(frame: pd.DataFrame, catalog: CatalogIndex) -> tuple[list[dict], int, int]:
    """Snapshot rows of triplets whose three images are usable and unchanged since;
    (rows, left out as unusable, left out as stale)."""
    rows, left_out, stale = [], 0, 0
    names = TRIPLET_IDS
    for record in frame.to_dict("records"):
        images = [image for name in names if (image := catalog.get(record[name])) is not None]
        if len(images) < len(names):
            left_out += 1
            continue
        recorded = (record[f"{name}_sha256"] for name in names)
        if any(map(_drawn_on_other_bytes, recorded, images)):
            stale += 1
            continue
        row: dict[str, object] = {"source": record["source"]}
        for name, image in zip(names, images, strict=True):
            row |= {name: image.image_id, f"{name}_sha256": image.sha256}
        rows.append(row)
    rows.sort(key=lambda row: (row["reference"], row["positive"], row["negative"]))
    return rows, left_out, stale


def read_snapshot(store: Store, key: str) -> pd.DataFrame:
    """The rows of a snapshot written by :meth:`AnnotationDatabase.export_snapshot`."""
    return store.read_parquet(key).to_pandas()
