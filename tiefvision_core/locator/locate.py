"""Locating boxes with a locator model: one decoded photo (:func:`locate_image`, the query
path) and the catalog's photos, written to storage (:func:`plan_locate`,
:func:`locate_shard`). The model's own files are :mod:`tiefvision_core.locator.model_files`.

Layout (see ``docs/formats.md``)::

    boxes/<version>/_plans/<id>.parquet       a locate run's work list
    boxes/<version>/part-<id>.parquet         image_id, sha256, box, score, positions, fallback,
                                              low_confidence (absent in parts written before it:
                                              read as false)

A boxes part is named by its input set and written in one put, so a killed locate run
resumes without duplicates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import pyarrow as pa
import torch
from PIL import Image

from tiefvision_core.catalog.boxes import part_keys, reuse_boxes
from tiefvision_core.catalog.manifest import usable_rows
from tiefvision_core.catalog.snapshot import CatalogSnapshot, catalog_snapshot
from tiefvision_core.encoders import Encoder
from tiefvision_core.encoding.pixels import whole_pixels
from tiefvision_core.encoding.requests import CropRequest
from tiefvision_core.encoding.runtime import EncodingRuntime
from tiefvision_core.errors import InputError
from tiefvision_core.locator.model import LocatedBox
from tiefvision_core.locator.model_files import LocatorModel
from tiefvision_core.storage.layout import boxes_prefix
from tiefvision_core.storage.stores import Store

__all__ = [
    "LocatePlan",
    "LocateSummary",
    "LocatedPart",
    "locate_image",
    "locate_shard",
    "plan_locate",
]

_BOX_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("sha256", pa.string()),
        ("locator_version", pa.string()),
        ("box", pa.list_(pa.int32(), 4)),
        ("score", pa.float32()),
        ("positions_kept", pa.int32()),
        ("fallback", pa.bool_()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        # Last, so the columns before it keep their positions in parts written before it.
        ("low_confidence", pa.bool_()),
    ]
)


def locate_image(
    model: LocatorModel,
    encoder: Encoder,
    image: Image.Image,
    *,
    scales: Sequence[int] | None = None,
    size: tuple[int, int] | None = None,
) -> LocatedBox:
    """The box of one decoded photo (the query path: no storage, no workers).

    ``scales``: the input sides to look at (default: the model's, as trained); the heads
    are the same at every scale, so a subset is a cheaper query-time choice. ``size``: the
    photo's own (oriented) size when ``image`` was decoded smaller (JPEG DCT scaling): the
    box is then in the photo's pixels, mapped at full precision rather than scaled up from
    rounded ones."""
    width, height = size or image.size
    maps = []
    with torch.inference_mode():
        for side in model.scales if scales is None else scales:
            pixels, _ = whole_pixels(image, side=side, multiple=model.geometry.stride)
            scale_xy = (pixels.shape[2] / width, pixels.shape[1] / height)
            fmap = encoder.encode_maps(pixels.unsqueeze(0).to(encoder.device)).float().cpu()
            maps.append((fmap, scale_xy))
    return model.locate(maps, (width, height))


@dataclass(frozen=True)
class LocateShard:
    shard_id: str
    start: int
    stop: int


@dataclass(frozen=True)
class LocatePlan:
    prefix: str
    plan_key: str | None
    shards: tuple[LocateShard, ...]
    images: int
    already_located: int  # reused ones included
    reused: int = 0  # boxes copied from the same bytes under another id (a renamed photo)

    def shard_key(self, shard: LocateShard) -> str:
        return f"{self.prefix}part-{shard.shard_id}.parquet"

    @property
    def to_locate(self) -> int:
        return sum(s.stop - s.start for s in self.shards)

    @property
    def locator_version(self) -> str:
        """The version whose boxes this plan writes (the last folder of ``prefix``)."""
        return self.prefix.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class LocatedPart:
    """What one :func:`locate_shard` call did; ``skipped``: the part was already written
    (by an earlier, killed run), so nothing was located now."""

    key: str
    skipped: bool
    located: int = 0
    fallback: int = 0
    rejected: int = 0
    low_confidence: int = 0


@dataclass(frozen=True)
class LocateSummary:
    """The locate stage's result: small plain values, persisted as a flow result (JSON) and
    printed by ``tiefvision locate [--json]``."""

    locator_version: str
    images: int
    already_located: int
    located: int
    fallback: int
    rejected: int
    seconds: float
    boxes_uri: str
    low_confidence: int = 0  # located from the best positions, none passing the threshold

    @classmethod
    def of_parts(
        cls, plan: LocatePlan, parts: Sequence[LocatedPart], *, seconds: float, boxes_uri: str
    ) -> LocateSummary:
        """The counts of every part of ``plan`` added up."""
        return cls(
            locator_version=plan.locator_version,
            images=plan.images,
            already_located=plan.already_located,
            located=sum(part.located for part in parts),
            fallback=sum(part.fallback for part in parts),
            rejected=sum(part.rejected for part in parts),
            seconds=round(seconds, 2),
            boxes_uri=boxes_uri,
            low_confidence=sum(part.low_confidence for part in parts),
        )

    def as_dict(self) -> dict[str, object]:
        """The ``--json`` form (keys in this order, as before the dataclass)."""
        return asdict(self)


def plan_locate(
    store: Store,
    model: LocatorModel,
    *,
    shard_size: int = 256,
    catalog: CatalogSnapshot | None = None,
) -> LocatePlan:
    """Catalog images (status ok) without a box for this locator version and these bytes;
    bytes it boxed under another id (a renamed photo) get a copy of that box instead.
    ``catalog``: the run's snapshot (default: the store's current manifest)."""
    manifest = catalog_snapshot(store, catalog).manifest
    if manifest is None:
        raise InputError("the catalog is empty: run `tiefvision ingest --images DIR` first")
    prefix = boxes_prefix(model.version)
    usable = usable_rows(manifest)
    done = {
        (r["image_id"], r["sha256"])
        for key in part_keys(store, prefix)
        for r in store.read_parquet(key, ["image_id", "sha256"]).to_pylist()
    }
    columns = ["image_id", "sha256", "source_uri", "width", "height"]
    listed = usable.select(columns).to_pylist()
    missing = [r for r in listed if (r["image_id"], r["sha256"]) not in done]
    boxed = {sha for _, sha in done}
    reused = reuse_boxes(
        store, prefix, [(r["image_id"], r["sha256"]) for r in missing if r["sha256"] in boxed]
    )
    rows = sorted(
        (r for r in missing if (r["image_id"], r["sha256"]) not in reused),
        key=lambda r: r["image_id"],
    )
    if not rows:
        return LocatePlan(prefix, None, (), usable.num_rows, usable.num_rows, len(reused))
    work = pa.Table.from_pylist(rows)
    salt = json.dumps([model.version, [(r["image_id"], r["sha256"]) for r in rows]])
    plan_key = f"{prefix}_plans/{hashlib.sha256(salt.encode()).hexdigest()[:24]}.parquet"
    if not store.exists(plan_key):
        store.write_parquet(plan_key, work)
    shards = []
    for start in range(0, len(rows), shard_size):
        part = rows[start : start + shard_size]
        ident = json.dumps([model.version, [(r["image_id"], r["sha256"]) for r in part]])
        shards.append(
            LocateShard(hashlib.sha256(ident.encode()).hexdigest()[:24], start, start + len(part))
        )
    return LocatePlan(
        prefix,
        plan_key,
        tuple(shards),
        usable.num_rows,
        usable.num_rows - len(rows),
        len(reused),
    )


def locate_shard(
    store: Store,
    runtime: EncodingRuntime,
    model: LocatorModel,
    plan: LocatePlan,
    shard: LocateShard,
    *,
    on_image: Callable[[int], None] | None = None,
) -> LocatedPart:
    """Encode each image whole at every scale (the encoding runtime's whole-image mode),
    apply the heads, write one part atomically. An existing part is skipped."""
    key = plan.shard_key(shard)
    if store.exists(key):
        return LocatedPart(key, skipped=True)
    assert plan.plan_key is not None  # None only in a plan without shards
    rows = store.read_parquet(plan.plan_key).slice(shard.start, shard.stop - shard.start)
    requests = [
        CropRequest.of_row(r, uri_column="source_uri", whole_side=side)
        for r in rows.to_pylist()
        for side in model.scales
    ]
    pending: dict[str, list] = {}
    out: list[dict[str, object]] = []

    def finish(request: CropRequest, reason: str | None = None, detail: str | None = None):
        maps = pending.pop(request.image_id, [])
        row: dict[str, object] = {"image_id": request.image_id, "sha256": request.sha256}
        if reason is None:
            located = model.locate(maps, (request.width, request.height))
            row |= {
                "box": list(located.box),
                "score": located.score,
                "positions_kept": located.positions_kept,
                "fallback": located.fallback,
                "low_confidence": located.low_confidence,
            }
        else:
            row |= {
                "box": None,
                "score": None,
                "positions_kept": 0,
                "fallback": None,
                "low_confidence": None,
            }
        out.append({**row, "reason": reason, "detail": detail, "locator_version": model.version})
        if on_image:
            on_image(1)

    rejected: set[str] = set()
    for batch in runtime.stream(requests):
        for request, fmap in zip(batch.requests, batch.maps, strict=True):
            if request.image_id in rejected:
                continue
            width, height = request.whole_size(model.geometry.stride)
            scale = (width / request.width, height / request.height)
            pending.setdefault(request.image_id, []).append((torch.from_numpy(fmap), scale))
            if len(pending[request.image_id]) == len(model.scales):
                finish(request)
        for request, reason, detail in batch.rejects:
            if request.image_id not in rejected:
                rejected.add(request.image_id)
                finish(request, reason, detail)
    table = pa.Table.from_pylist(out, schema=_BOX_SCHEMA)
    store.write_parquet(key, table)
    valid = [r for r in out if r["reason"] is None]
    return LocatedPart(
        key,
        skipped=False,
        located=len(valid),
        fallback=sum(bool(r["fallback"]) for r in valid),
        rejected=len(out) - len(valid),
        low_confidence=sum(bool(r["low_confidence"]) for r in valid),
    )
