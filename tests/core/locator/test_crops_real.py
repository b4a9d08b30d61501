"""The crops stage on real street photos (tests/data/real/ccp-dresses): two of them have
no labelled window at the smallest scale, which once made ``finish_crops`` fail with
pyarrow's "Schema at index N was different" (an empty piece typed from nothing)."""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tiefvision_core.annotations.repository import AnnotationDatabase
from tiefvision_core.annotations.snapshots import read_snapshot
from tiefvision_core.catalog.ingest import ingest_catalog
from tiefvision_core.catalog.manifest import image_id_for, read_manifest
from tiefvision_core.catalog.synthetic import generate_catalog
from tiefvision_core.encoding.runtime import RuntimeConfig
from tiefvision_core.locator.crops import (
    DEFAULT_SCALES,
    MAX_FITTED_SIDE,
    WINDOWS_SCHEMA,
    CropConfig,
    build_part,
    finish_crops,
    fit_scales,
    load_samples,
    median_shorter_share,
    plan_crops,
    window_piece,
)
from tiefvision_core.locator.model import WindowGeometry
from tiefvision_core.storage.stores import LocalStore

DRESSES = Path(__file__).parents[2] / "data" / "real" / "ccp-dresses"
#: At scale 320 these tall photos' maps are narrower than one window (see README).
WINDOWLESS = {"0047.jpg", "0136.jpg"}


def test_a_map_without_labelled_windows_is_an_empty_piece_of_the_declared_schema() -> None:
    ignored = {
        "row": np.arange(3),
        "col": np.arange(3),
        "crop": np.zeros((3, 4)),
        "inside": np.full(3, 0.7),
        "label": np.full(3, -1, np.int8),
        "target": np.zeros((3, 4)),
    }
    empty = window_piece("a", "train", 320, ignored)
    assert empty.num_rows == 0 and empty.schema == WINDOWS_SCHEMA
    labelled = window_piece("b", "test", 448, {**ignored, "label": np.array([1, 0, -1], np.int8)})
    assert labelled.num_rows == 2
    assert pa.concat_tables([empty, labelled]).column("image_id").to_pylist() == ["b", "b"]


LITE0_WINDOWS = WindowGeometry(stride=32, crop_size=224, kernel=(7, 7))


def test_scales_gain_one_larger_side_only_for_narrow_products() -> None:
    # Studio-like: products half the photo's longer side fit windows at 576 already.
    assert fit_scales(DEFAULT_SCALES, 0.44, LITE0_WINDOWS) == DEFAULT_SCALES
    # A dress a third of a portrait photo's width (0.224 of its height): 0.75 · 224 / 0.224
    # = 750 input pixels, rounded up to the stride.
    assert fit_scales(DEFAULT_SCALES, 0.224, LITE0_WINDOWS) == (320, 448, 576, 768)
    assert fit_scales(DEFAULT_SCALES, 0.01, LITE0_WINDOWS)[-1] == MAX_FITTED_SIDE
    assert fit_scales(DEFAULT_SCALES, 0.0, LITE0_WINDOWS) == DEFAULT_SCALES  # no boxes


def test_median_shorter_share_is_the_box_shorter_side_over_the_photo_longer_side() -> None:
    frame = pd.DataFrame(
        {"left": [0, 10, 0], "top": [0, 0, 0], "right": [100, 60, 30], "bottom": [50, 400, 30]}
    ).assign(width=[200, 400, 300], height=[100, 800, 100])
    # shorter sides 50, 50, 30 over longer sides 200, 800, 300 → 0.25, 0.0625, 0.1
    assert median_shorter_share(frame) == pytest.approx(0.1)
    assert median_shorter_share(frame.iloc[:0]) == 0.0


def test_crops_of_real_street_photos_with_a_windowless_scale(lite0, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for photo in DRESSES.glob("*.jpg"):
        shutil.copy(photo, images / photo.name)
    (images / "empty.jpg").write_bytes(b"")  # a reject beside the real photos
    assert {p.name for p in images.iterdir()} >= WINDOWLESS
    store = LocalStore(str(tmp_path / "store"))
    summary = ingest_catalog(LocalStore(str(images)), store)
    assert summary.rejected == 1
    with open(DRESSES / "boxes.csv", newline="") as rows:
        boxes = pd.DataFrame(
            {
                "image_id": image_id_for(r["image"]),
                **{k: int(r[k]) for k in ("left", "top", "right", "bottom")},
                "sha256": None,
            }
            for r in csv.DictReader(rows)
        )
    config = CropConfig(min_images=4, part_size=4)
    plan = plan_crops(store, lite0, boxes, snapshot_key="snap", snapshot_digest="d", config=config)
    # The dresses are a third of the photo's width or less: one larger side is fitted to
    # them (a different dataset than without fitting), unless the caller opts out.
    assert plan.scales[:-1] == config.scales and plan.scales[-1] > max(config.scales)
    unfitted = replace(config, fit_to_boxes=False)
    as_given = plan_crops(
        store, lite0, boxes, snapshot_key="snap", snapshot_digest="d", config=unfitted
    )
    assert as_given.scales == config.scales and as_given.dataset_id != plan.dataset_id
    runtime = RuntimeConfig(device="cpu", threads=1, workers=0, cpu_processes=0).build()
    for spec in plan.parts:
        build_part(store, runtime, plan, spec, plan.scales)

    dataset = finish_crops(store, lite0, plan, config)

    windows = store.read_parquet(f"{dataset.prefix}windows.parquet")
    assert windows.schema == WINDOWS_SCHEMA
    ids = {image_id_for(name) for name in WINDOWLESS}
    at_320 = windows.filter(pa.compute.equal(windows["side"], 320)).column("image_id")
    assert ids.isdisjoint(at_320.to_pylist())  # nothing labelled there …
    assert ids <= set(windows.column("image_id").to_pylist())  # … but at the larger scales
    assert sum(dataset.windows.values()) == windows.num_rows
    assert dataset.scales == plan.scales
    assert set(windows.column("side").to_pylist()) == set(plan.scales)

    # Training samples: only maps the heads can run over (the narrow ones crashed the conv).
    samples = load_samples(store, dataset)
    assert samples and all(min(s.labels.shape) >= 1 for s in samples)
    narrow = {(s.image_id, s.side) for s in samples if s.image_id in ids}
    assert narrow and all(side > 320 for _, side in narrow)


def test_a_box_of_a_replaced_photo_is_counted_stale_and_not_trained_on(
    lite0, tmp_path: Path
) -> None:
    """Issue 28: the snapshot paired the old box with the new bytes and the crops plan
    (train-locator's "stale" count) said 0. The box is left out of the snapshot and counted
    there, and the plan counts what the snapshot left out."""
    generate_catalog(tmp_path / "catalog", products=3, views=2, seed=4, size=(160, 200))
    images = tmp_path / "catalog" / "images"
    store = LocalStore(str(tmp_path / "store"))
    ingest_catalog(LocalStore(str(images)), store)
    with AnnotationDatabase(f"sqlite:///{tmp_path / 'annotations.sqlite'}") as annotations:
        for path in sorted(p.relative_to(images).as_posix() for p in images.rglob("*.jpg")):
            annotations.set_box(path, (10, 10, 150, 190), manifest=read_manifest(store))
        replaced = images / "p0000" / "view-1.jpg"
        replaced.write_bytes((images / "p0002" / "view-2.jpg").read_bytes())
        ingest_catalog(LocalStore(str(images)), store)
        snapshot = annotations.export_snapshot(store, "boxes")
    boxes = read_snapshot(store, snapshot.key)
    assert (snapshot.rows, snapshot.stale) == (5, 1)
    assert image_id_for("p0000/view-1.jpg") not in set(boxes["image_id"])
    config = CropConfig(min_images=4, part_size=4, fit_to_boxes=False)
    plan = plan_crops(
        store,
        lite0,
        boxes,
        snapshot_key=snapshot.key,
        snapshot_digest=snapshot.digest,
        config=config,
        stale=snapshot.stale,
    )
    assert (plan.images, plan.stale) == (5, 1)
    work = store.read_parquet(plan.work_key)
    assert image_id_for("p0000/view-1.jpg") not in work["image_id"].to_pylist()
