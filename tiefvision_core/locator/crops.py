"""The locator's training data: annotated photos encoded whole at several scales, and the
labelled windows of those encodings.

Why whole-image maps instead of thousands of separately encoded crops: a window of the
whole-image encoding *is* the encoding of that crop in context — exactly what the heads see
at inference — and one map serves every window of its scale. A 576-pixel input of a
portrait photo holds 96 windows for the cost of ~5 crops, and storing one map per scale is
~50× smaller than storing every window's 7×7×1280 grid.

Layout under ``crops/<dataset_id>/`` (see ``docs/formats.md``)::

    _work.parquet              the annotated images, their boxes and split (the plan)
    maps/part-<id>.parquet     image_id, sha256, side, input size, grid, vector (HWC float16)
    windows.parquet            image_id, split, side, row, col, crop, inside, label, target
    dataset.json               what went in (encoder, annotation snapshot, scales, split)

``dataset.json`` is written last: a dataset without it is unfinished, and a rerun resumes
from the parts already written (each part is named by its exact input set).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from tiefvision_core.catalog.boxes import as_box
from tiefvision_core.catalog.manifest import read_manifest, usable_rows
from tiefvision_core.encoders import Encoder
from tiefvision_core.encoding.requests import CropRequest, EncodedBatch
from tiefvision_core.errors import InputError
from tiefvision_core.locator.model import (
    WindowGeometry,
    box_targets,
    inside_fraction,
    split_by_image,
    window_label,
)
from tiefvision_core.storage.layout import CROPS_LATEST, crops_dataset_key, crops_prefix
from tiefvision_core.storage.stores import Store

__all__ = [
    "DEFAULT_SCALES",
    "WINDOWS_SCHEMA",
    "CropConfig",
    "CropDataset",
    "CropPart",
    "CropPlan",
    "MapSample",
    "build_part",
    "finish_crops",
    "fit_scales",
    "load_samples",
    "map_rows",
    "plan_crops",
    "split_strata",
    "window_geometry",
    "window_piece",
]

#: Longer side of the whole-image input, per scale. A 224-pixel window then spans 70 %,
#: 50 % and 39 % of the photo's longer side: products from about half the photo up get
#: windows that lie mostly inside them; narrower ones get one more side (:func:`fit_scales`).
DEFAULT_SCALES = (320, 448, 576)
#: :func:`fit_scales`: at the largest scale, the annotated products' median shorter side
#: should span at least this share of a window; never add a side above ``MAX_FITTED_SIDE``.
WINDOW_COVER = 0.75
MAX_FITTED_SIDE = 1024
_MAP_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("sha256", pa.string()),
        ("side", pa.int32()),
        ("input_w", pa.int32()),
        ("input_h", pa.int32()),
        ("grid_h", pa.int32()),
        ("grid_w", pa.int32()),
        ("channels", pa.int32()),
        ("vector", pa.large_list(pa.float16())),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)


def window_geometry(encoder: Encoder) -> WindowGeometry:
    """The locator's windows for ``encoder``: one canonical crop each."""
    return WindowGeometry(
        stride=encoder.geometry.stride,
        crop_size=encoder.preprocessing.crop_size,
        kernel=encoder.geometry.grid,
    )


@dataclass(frozen=True)
class CropConfig:
    """How windows are cut and split. Part of the dataset's identity."""

    scales: tuple[int, ...] = DEFAULT_SCALES
    test_fraction: float = 0.2
    seed: int = 0
    min_images: int = 20
    part_size: int = 32
    #: Add one larger scale where the annotated products are narrow (see fit_scales).
    fit_to_boxes: bool = True

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) < 64:
            raise InputError(f"scales {self.scales}: give one or more input sides ≥ 64 pixels")
        if not 0.0 < self.test_fraction < 1.0:
            raise InputError(f"test fraction {self.test_fraction}: choose a value in (0, 1)")


@dataclass(frozen=True)
class PartSpec:
    part_id: str
    start: int
    stop: int


@dataclass(frozen=True)
class CropPlan:
    dataset_id: str
    prefix: str
    encoder_version: str
    snapshot_key: str
    snapshot_digest: str
    images: int
    train_images: int
    test_images: int
    stale: int  # annotated images whose bytes changed since (their box may be wrong)
    parts: tuple[PartSpec, ...] = field(default=())
    #: The input sides the windows are cut from: the config's, plus fit_scales' side.
    scales: tuple[int, ...] = DEFAULT_SCALES

    @property
    def work_key(self) -> str:
        return f"{self.prefix}_work.parquet"

    def part_key(self, spec: PartSpec) -> str:
        return f"{self.prefix}maps/part-{spec.part_id}.parquet"


@dataclass(frozen=True)
class CropDataset:
    """A finished crops dataset: what ``dataset.json`` says."""

    dataset_id: str
    prefix: str
    encoder: str
    encoder_version: str
    snapshot_key: str
    snapshot_digest: str
    scales: tuple[int, ...]
    window: dict[str, object]
    images: dict[str, int]
    windows: dict[str, int]
    rejected: int
    config: dict[str, object]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def split_strata(frame: pd.DataFrame) -> dict[str, str]:
    """Category when the catalog has one; otherwise the box's share of the photo in
    quartiles, so both splits see small and large products."""
    if "category" in frame and frame["category"].notna().all():
        return dict(zip(frame["image_id"], frame["category"].astype(str), strict=True))
    share = (frame["right"] - frame["left"]) * (frame["bottom"] - frame["top"])
    share = share / (frame["width"] * frame["height"])
    buckets = pd.qcut(share.rank(method="first"), q=min(4, len(frame)), labels=False)
    return dict(zip(frame["image_id"], buckets.astype(str), strict=True))


def median_shorter_share(frame: pd.DataFrame) -> float:
    """Median over ``frame``'s boxes of the box's shorter side over the photo's longer side:
    what a scale (the photo's longer side in input pixels) multiplies to give the product's
    narrowest extent in input pixels."""
    if frame.empty:
        return 0.0
    shorter = np.minimum(frame["right"] - frame["left"], frame["bottom"] - frame["top"])
    return float(np.median(shorter / np.maximum(frame["width"], frame["height"])))


def fit_scales(
    scales: tuple[int, ...], shorter_share: float, geometry: WindowGeometry
) -> tuple[int, ...]:
    """``scales``, plus one larger side when at the largest of them the annotated products'
    median shorter side (``shorter_share`` of the photo's longer side) spans less than
    ``WINDOW_COVER`` of a window: that side, rounded up to the stride, at most
    ``MAX_FITTED_SIDE``.

    Why: a window is foreground only when more than half of it lies inside the box, so a
    product narrower than about a window at every scale has few foreground windows, or
    none — no window the classifier learns to trust, and boxes regressed from windows that
    mostly see background. Real street photos of dresses (a third of the photo's width)
    are such a catalog: with the default sides no position reached P ≥ 0.8 on most photos.
    Studio photos (products half the photo) keep the default sides and their cost.
    """
    if shorter_share <= 0:
        return scales
    needed = WINDOW_COVER * geometry.crop_size / shorter_share
    if needed <= max(scales):
        return scales
    side = min(MAX_FITTED_SIDE, math.ceil(needed / geometry.stride) * geometry.stride)
    return (*scales, side) if side > max(scales) else scales


def plan_crops(
    store: Store,
    encoder: Encoder,
    boxes: pd.DataFrame,
    *,
    snapshot_key: str,
    snapshot_digest: str,
    config: CropConfig,
    stale: int = 0,
) -> CropPlan:
    """Join the annotation snapshot with the manifest, split by image, name the dataset.

    ``boxes``: image_id, left, top, right, bottom, sha256 (as annotated). Images no longer
    in the catalog are ignored; images whose bytes changed since annotation are left out
    (``stale``) rather than trained on a box that may no longer fit — those the snapshot
    already left out (``stale``: its count) and those changed since it was taken.
    """
    manifest = read_manifest(store)
    if manifest is None:
        raise InputError("the catalog is empty: run `tiefvision ingest --images DIR` first")
    ok = usable_rows(manifest).to_pandas()
    extra = [c for c in ("category",) if c in ok]
    ok = ok[["image_id", "sha256", "source_uri", "width", "height", *extra]]
    joined = boxes[["image_id", "left", "top", "right", "bottom", "sha256"]].merge(
        ok, on="image_id", suffixes=("_annotated", "")
    )
    fresh = joined["sha256_annotated"].isna() | (joined["sha256_annotated"] == joined["sha256"])
    stale += int((~fresh).sum())
    frame = joined[fresh].sort_values("image_id").reset_index(drop=True)
    if len(frame) < config.min_images:
        raise InputError(
            f"training the locator needs boxes on at least {config.min_images} catalog images; "
            f"{len(frame)} usable found ({stale} stale). Add boxes with "
            "`tiefvision import-boxes FILE` (CSV image_id,left,top,right,bottom or COCO JSON)"
        )
    split = split_by_image_frame(frame, config)
    frame["split"] = frame["image_id"].map(split)
    scales = tuple(config.scales)
    if config.fit_to_boxes:
        train = frame[frame["split"] == "train"]
        scales = fit_scales(scales, median_shorter_share(train), window_geometry(encoder))
    identity = json.dumps(
        [encoder.version, snapshot_digest, list(scales), config.test_fraction, config.seed]
    )
    dataset_id = hashlib.sha256(identity.encode()).hexdigest()[:16]
    prefix = crops_prefix(dataset_id)
    work = pa.Table.from_pandas(
        frame[["image_id", "sha256", "source_uri", "width", "height"]]
        .rename(columns={"source_uri": "uri"})
        .assign(
            # a Series: pandas-stubs take a plain list for scalars only, not one list per row
            box=pd.Series(
                frame[["left", "top", "right", "bottom"]].astype(int).to_numpy().tolist(),
                index=frame.index,
            ),
            split=frame["split"],
        ),
        preserve_index=False,
    )
    plan = CropPlan(
        dataset_id,
        prefix,
        encoder.version,
        snapshot_key,
        snapshot_digest,
        len(frame),
        int((frame["split"] == "train").sum()),
        int((frame["split"] == "test").sum()),
        stale,
        scales=scales,
    )
    if not store.exists(plan.work_key):
        store.write_parquet(plan.work_key, work)
    parts = []
    for start in range(0, len(frame), config.part_size):
        rows = frame.iloc[start : start + config.part_size]
        ident = json.dumps([identity, rows["image_id"].tolist(), rows["sha256"].tolist()])
        parts.append(
            PartSpec(hashlib.sha256(ident.encode()).hexdigest()[:16], start, start + len(rows))
        )
    return CropPlan(**{**asdict(plan), "parts": tuple(parts)})


def split_by_image_frame(frame: pd.DataFrame, config: CropConfig) -> dict[str, str]:
    return split_by_image(split_strata(frame), test_fraction=config.test_fraction, seed=config.seed)


def _work_requests(store: Store, plan: CropPlan, spec: PartSpec, scales: Iterable[int]) -> list:
    table = store.read_parquet(plan.work_key).slice(spec.start, spec.stop - spec.start)
    return [CropRequest.of_row(r, whole_side=side) for r in table.to_pylist() for side in scales]


def map_rows(batches: Iterable[EncodedBatch], stride: int) -> pa.Table:
    """Whole-image maps of streamed batches as rows of the maps schema (HWC float16)."""
    rows: dict[str, list] = {name: [] for name in _MAP_SCHEMA.names}

    def add(request: CropRequest, maps: np.ndarray | None, reason: str | None, detail: str | None):
        input_w, input_h = request.whole_size(stride)
        channels, grid_h, grid_w = maps.shape if maps is not None else (0, 0, 0)
        values = (
            maps.transpose(1, 2, 0).reshape(-1).astype(np.float16) if maps is not None else None
        )
        for name, value in (
            ("image_id", request.image_id),
            ("sha256", request.sha256),
            ("side", request.whole_side),
            ("input_w", input_w),
            ("input_h", input_h),
            ("grid_h", grid_h),
            ("grid_w", grid_w),
            ("channels", channels),
            ("vector", values),
            ("reason", reason),
            ("detail", detail),
        ):
            rows[name].append(value)

    for batch in batches:
        for request, maps in zip(batch.requests, batch.maps, strict=True):
            add(request, maps, None, None)
        for request, reason, detail in batch.rejects:
            add(request, None, reason, detail)
    return pa.Table.from_pydict(rows, schema=_MAP_SCHEMA)


@dataclass(frozen=True)
class CropPart:
    """What one :func:`build_part` call did; ``skipped``: the part was already written (by
    an earlier, killed run), so nothing was encoded now."""

    key: str
    skipped: bool
    maps: int = 0
    rejected: int = 0
    seconds: float = 0.0


def build_part(
    store: Store, runtime, plan: CropPlan, spec: PartSpec, scales: tuple[int, ...]
) -> CropPart:
    """Encode one part's images at every scale (the encoding runtime's whole-image mode)
    and write its maps in one atomic put; an existing part is skipped."""
    key = plan.part_key(spec)
    if store.exists(key):
        return CropPart(key, skipped=True)
    started = time.perf_counter()
    requests = _work_requests(store, plan, spec, scales)
    table = map_rows(runtime.stream(requests), runtime.encoder.geometry.stride)
    store.write_parquet(key, table, plain_columns=("vector",))
    rejected = int(pc.sum(pc.is_valid(table["reason"])).as_py() or 0)
    return CropPart(
        key,
        skipped=False,
        maps=table.num_rows - rejected,
        rejected=rejected,
        seconds=round(time.perf_counter() - started, 3),
    )


def _windows_for(
    row: dict, box: tuple[int, int, int, int], geometry: WindowGeometry
) -> dict[str, np.ndarray]:
    scale_xy = (row["input_w"] / row["width"], row["input_h"] / row["height"])
    crops = geometry.windows(row["grid_h"], row["grid_w"], scale_xy).reshape(-1, 4)
    rows, cols = geometry.head_grid(row["grid_h"], row["grid_w"])
    grid_r, grid_c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return {
        "row": grid_r.reshape(-1),
        "col": grid_c.reshape(-1),
        "crop": crops,
        "inside": inside_fraction(crops, box),
        "label": window_label(crops, box),
        "target": box_targets(crops, box),
    }


#: ``windows.parquet``: one row per labelled window. Declared rather than inferred: a photo
#: with no labelled window at some scale (on real photos, a box that every window overlaps
#: between half and all) gives an empty piece, whose inferred types are all null and would
#: not concatenate with the others.
WINDOWS_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("split", pa.string()),
        ("side", pa.int32()),
        ("row", pa.int32()),
        ("col", pa.int32()),
        ("crop", pa.list_(pa.float64(), 4)),
        ("inside", pa.float64()),
        ("label", pa.int8()),
        ("target", pa.list_(pa.float64(), 4)),
    ]
)


def window_piece(image_id: str, split: str, side: int, windows: dict[str, np.ndarray]) -> pa.Table:
    """The labelled windows of one map as rows of :data:`WINDOWS_SCHEMA` (maybe none)."""
    labelled = windows["label"] >= 0
    n = int(labelled.sum())
    return pa.table(
        {
            "image_id": [image_id] * n,
            "split": [split] * n,
            "side": np.full(n, side, np.int32),
            "row": windows["row"][labelled].astype(np.int32),
            "col": windows["col"][labelled].astype(np.int32),
            "crop": list(windows["crop"][labelled]),
            "inside": windows["inside"][labelled].astype(np.float64),
            "label": windows["label"][labelled].astype(np.int8),
            "target": list(windows["target"][labelled]),
        },
        schema=WINDOWS_SCHEMA,
    )


def finish_crops(store: Store, encoder: Encoder, plan: CropPlan, config: CropConfig) -> CropDataset:
    """Label every window of every stored map, write ``windows.parquet`` and, last,
    ``dataset.json``; point ``crops/LATEST`` at the dataset."""
    geometry = window_geometry(encoder)
    work = store.read_parquet(plan.work_key).to_pandas().set_index("image_id")
    columns = ["image_id", "side", "input_w", "input_h", "grid_h", "grid_w", "reason"]
    maps = pa.concat_tables(store.read_parquet(plan.part_key(s), columns) for s in plan.parts)
    rejected = int(pc.sum(pc.is_valid(maps["reason"])).as_py() or 0)
    pieces = []
    for row in maps.filter(pc.is_null(maps["reason"])).to_pylist():
        info = work.loc[row["image_id"]]
        row = {**row, "width": int(info["width"]), "height": int(info["height"])}
        windows = _windows_for(row, tuple(info["box"]), geometry)
        pieces.append(window_piece(row["image_id"], info["split"], row["side"], windows))
    table = pa.concat_tables(pieces) if pieces else WINDOWS_SCHEMA.empty_table()
    store.write_parquet(f"{plan.prefix}windows.parquet", table)
    frame = table.select(["split", "label"]).to_pandas()
    counts = {
        f"{split}_{'foreground' if label == 1 else 'background'}": int(n)
        for (split, label), n in frame.value_counts().items()
    }
    dataset = CropDataset(
        dataset_id=plan.dataset_id,
        prefix=plan.prefix,
        encoder=encoder.name,
        encoder_version=encoder.version,
        snapshot_key=plan.snapshot_key,
        snapshot_digest=plan.snapshot_digest,
        scales=plan.scales,
        window=asdict(geometry),
        images={"train": plan.train_images, "test": plan.test_images, "stale": plan.stale},
        windows=dict(sorted(counts.items())),
        rejected=rejected,
        config=asdict(config),
    )
    store.put_bytes(f"{plan.prefix}dataset.json", json.dumps(dataset.as_dict(), indent=1).encode())
    store.publish_pointer(CROPS_LATEST, plan.dataset_id)
    return dataset


def read_dataset(store: Store, dataset_id: str | None = None) -> CropDataset:
    """A finished dataset (default: the latest one written)."""
    dataset_id = dataset_id or store.read_pointer(CROPS_LATEST)
    key = crops_dataset_key(dataset_id) if dataset_id is not None else None
    if key is None or not store.exists(key):
        raise InputError(
            f"no finished crops dataset {dataset_id or ''}: run `tiefvision crops` "
            "(or `tiefvision train-locator`, which builds it) first".replace("  ", " ")
        )
    data = json.loads(store.get_bytes(key))
    data["scales"] = tuple(data["scales"])
    return CropDataset(**data)


@dataclass
class MapSample:
    """One photo at one scale: its map and, per head position, label and raw target."""

    image_id: str
    split: str
    side: int
    maps: torch.Tensor  # (C, H, W) float16
    labels: torch.Tensor  # (rows, cols) int8: 1, 0, -1 (ignored or unlabelled)
    targets: torch.Tensor  # (rows, cols, 4) float32, raw (not standardised)
    scale_xy: tuple[float, float]
    image_size: tuple[int, int]
    box: tuple[int, int, int, int]


def _read_maps(store: Store, dataset: CropDataset) -> Iterator[dict]:
    for info in store.list(f"{dataset.prefix}maps/"):
        if info.key.endswith(".parquet"):
            table = store.read_parquet(info.key)
            yield from table.filter(pc.is_null(table["reason"])).to_pylist()


def load_samples(store: Store, dataset: CropDataset) -> list[MapSample]:
    """Every (photo, scale) of the dataset as a training sample, maps kept in float16."""
    geometry = WindowGeometry.from_dict(dataset.window)
    work = store.read_parquet(f"{dataset.prefix}_work.parquet").to_pandas().set_index("image_id")
    windows = store.read_parquet(f"{dataset.prefix}windows.parquet").to_pandas()
    by_key = {key: group for key, group in windows.groupby(["image_id", "side"])}
    samples = []
    for row in _read_maps(store, dataset):
        rows, cols = geometry.head_grid(row["grid_h"], row["grid_w"])
        if rows == 0 or cols == 0:
            # This scale's input is narrower than one window (a tall street photo at the
            # smallest side): no window to learn from, and the heads cannot run over it.
            continue
        info = work.loc[row["image_id"]]
        maps = torch.from_numpy(
            np.asarray(row["vector"], np.float16).reshape(row["grid_h"], row["grid_w"], -1)
        ).permute(2, 0, 1)
        labels = torch.full((rows, cols), -1, dtype=torch.int8)
        targets = torch.zeros(rows, cols, 4)
        group = by_key.get((row["image_id"], row["side"]))
        if group is not None:
            r = torch.tensor(group["row"].to_numpy(np.int64))
            c = torch.tensor(group["col"].to_numpy(np.int64))
            labels[r, c] = torch.tensor(group["label"].to_numpy(np.int8))
            targets[r, c] = torch.from_numpy(
                np.stack(group["target"].to_numpy()).astype(np.float32)
            )
        width, height = int(info["width"]), int(info["height"])
        samples.append(
            MapSample(
                image_id=row["image_id"],
                split=str(info["split"]),
                side=int(row["side"]),
                maps=maps.contiguous(),
                labels=labels,
                targets=targets,
                scale_xy=(row["input_w"] / width, row["input_h"] / height),
                image_size=(width, height),
                box=as_box(info["box"]),
            )
        )
    return samples
