"""Steps the quality benches share: a store ingested once, boxes imported as a person would,
the real ``train-locator`` and ``locate`` flows timed, and grid encodings of given crops.

Why shared: ``bench/locator.py`` and ``bench/generalisation.py`` measure the same pipeline
on different catalogs; one copy of the steps keeps them measuring the same thing.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "LocatorBench",
    "encode_grids",
    "import_boxes",
    "ingest_once",
    "prefect_here",
    "print_box_table",
    "score_boxes",
    "train_and_locate",
    "truth_boxes",
    "use_encoder",
]


def prefect_here(home: Path) -> None:
    """Prefect's state under ``home`` (a bench does not share, or lock, the user's or another
    run's database) and time for its temporary server to start on a busy machine."""
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no telemetry
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def use_encoder(name: str) -> bool:
    """Make ``name`` the encoder of every flow this process runs; False (and a line saying
    why) when its weights are not on this machine."""
    from tiefvision_core.encoders import get_encoder
    from tiefvision_core.errors import WeightsNotFound

    try:
        get_encoder(name)
    except WeightsNotFound as missing:
        print(f"{name}: skipped — {missing}")
        return False
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ["TIEFVISION_ENCODER"] = name
    return True


def ingest_once(store_dir: Path, images: Path, metadata: Path | None = None) -> Any:
    """The store at ``store_dir`` with ``images`` ingested; a store that already has a
    manifest is reused as it is (what makes a bench's workdir a cache)."""
    from tiefvision_core.catalog.ingest import ingest_catalog
    from tiefvision_core.catalog.manifest import read_manifest
    from tiefvision_core.storage.stores import LocalStore
    from tiefvision_core.storage.urls import open_store

    store = open_store(store_dir.as_uri())
    if read_manifest(store) is None:
        ingest_catalog(LocalStore(images, create=False), store, metadata=metadata)
    return store


def import_boxes(store: Any, boxes_csv: Path) -> None:
    """Import ``boxes_csv`` through the annotations store (upserts: rerunning is a no-op)."""
    from tiefvision_core.annotations.database import database_url_for
    from tiefvision_core.annotations.repository import AnnotationDatabase
    from tiefvision_core.catalog.manifest import read_manifest
    from tiefvision_core.config import load_settings

    settings = load_settings(store_url=store.url)
    with AnnotationDatabase(database_url_for(settings)) as annotations:
        annotations.import_boxes(boxes_csv, read_manifest(store))


@dataclass
class LocatorBench:
    """One ``train-locator`` + ``locate`` round and what each took."""

    run: Any  # LocatorRun
    train_seconds: float
    summary: Any  # LocateSummary
    locate_seconds: float
    every_side_version: str | None = None  # bench/generalisation: the all-sides copy


def train_and_locate(
    store: Any, encoder: str, scales: tuple[int, ...] | None = None
) -> LocatorBench:
    """Train the locator on the store's annotations (the crops dataset is reused when the
    annotations did not change) and locate every photo with it; ``scales``: the
    whole-image input sides (default: the flow's)."""
    from flows.locate import locate
    from flows.train_locator import train_locator

    store_url = store.url
    started = time.perf_counter()
    extra = {} if scales is None else {"scales": tuple(scales)}
    run = train_locator(store=store_url, encoder=encoder, **extra)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    summary = locate(store=store_url, encoder=encoder)
    return LocatorBench(run, train_seconds, summary, time.perf_counter() - started)


def every_side_copy(store: Any, version: str) -> str:
    """An unpublished copy of locator ``version`` that locates at every side it was trained
    at (the path before sides were measured): the same heads, so locating the catalog with
    both compares the measured choice with all sides in one run."""
    from tiefvision_core.locator.model_files import load_locator, save_locator

    model = load_locator(store, version)
    copy = save_locator(
        store,
        model.heads,
        model.scaler,
        geometry=model.geometry,
        scales=model.metadata["scales"],
        locate_scales=model.metadata["scales"],
        threshold=model.threshold,
        metadata={**model.metadata, "copied_from": version},
        publish=False,
        min_positions=model.min_positions,
        best_positions=model.best_positions,
    )
    return copy.version


def truth_boxes(store: Any, boxes: pd.DataFrame) -> pd.DataFrame:
    """``boxes`` (image, left…bottom; image = path under the ingested folder) with each
    photo's image_id and its width and height from the store's manifest."""
    from tiefvision_core.catalog.manifest import image_id_for, read_manifest, usable_rows

    sizes = usable_rows(read_manifest(store)).select(["image_id", "width", "height"])
    return boxes.assign(image_id=boxes["image"].map(image_id_for)).merge(
        sizes.to_pandas(), on="image_id"
    )


def score_boxes(
    store: Any, version: str, truth: pd.DataFrame, scored: set[str], reference: set[str]
) -> Any:
    """Located boxes of locator ``version`` on the ``scored`` image ids against ``truth``,
    with both baselines; the median box is the ``reference`` (training) photos' median."""
    from tiefvision_core.catalog.boxes import read_boxes
    from tiefvision_core.locator.evaluation import evaluate_boxes

    return evaluate_boxes(
        read_boxes(store, version),
        truth[truth["image_id"].isin(scored)],
        truth[truth["image_id"].isin(reference)],
    )


def print_box_table(evaluation: Any) -> None:
    """The locator and both baselines, one row each (a ``LocatorEvaluation``), then its
    fallbacks (and low-confidence boxes, where the locator on disk flags them)."""
    print(f"{'boxes':<28}{'mean IoU':>10}{'IoU≥0.5':>10}{'IoU≥0.7':>10}")
    for row in evaluation.table():
        print(
            f"{row['boxes']:<28}{row['mean_iou']:>10.3f}"
            f"{row['share_iou_05']:>10.1%}{row['share_iou_07']:>10.1%}"
        )
    images = max(evaluation.images, 1)
    low = getattr(evaluation, "low_confidence", None)
    print(
        f"fallbacks (whole photo): {evaluation.fallbacks} ({evaluation.fallbacks / images:.1%})"
        + ("" if low is None else f"; low-confidence boxes: {low} ({low / images:.1%})")
    )


def encode_grids(
    images: Path, boxes: Mapping[str, tuple[int, int, int, int] | None], *, flips: bool = True
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, similarity-grid maps, maps of the mirrors) of ``images/<name>`` cropped to
    ``boxes[name]`` (None: the whole photo), in sorted name order — the crops the encode
    stage makes, encoded by the same runtime. ``flips=False``: no mirror pass, and the
    mirrors' array is empty (0 rows)."""
    from tiefvision_core.catalog.imaging import inspect_image
    from tiefvision_core.config import load_settings
    from tiefvision_core.encoding.requests import CropRequest
    from tiefvision_core.encoding.runtime import RuntimeConfig
    from tiefvision_core.similarity.unsupervised import similarity_grid

    requests = []
    max_pixels = load_settings().max_image_pixels
    for name in sorted(boxes):
        path = images / name
        data = path.read_bytes()
        info = inspect_image(data, max_pixels=max_pixels)
        requests.append(
            CropRequest(
                name,
                hashlib.sha256(data).hexdigest(),
                path.as_uri(),
                info.width,
                info.height,
                box=boxes[name],
            )
        )
    runtime = RuntimeConfig().build()
    plain: dict[str, np.ndarray] = {}
    mirrored: dict[str, np.ndarray] = {}
    try:
        for batch in runtime.stream(requests, flips=flips):
            for request, fmap, flipped in zip(
                batch.requests, batch.maps, batch.flipped, strict=True
            ):
                (mirrored if flipped else plain)[request.image_id] = fmap
    finally:
        runtime.close()
    names = sorted(plain)
    return (
        names,
        similarity_grid(np.stack([plain[n] for n in names])),
        similarity_grid(np.stack([mirrored[n] for n in names]))
        if flips
        else np.zeros((0, 0, 0, 0), np.float32),
    )
