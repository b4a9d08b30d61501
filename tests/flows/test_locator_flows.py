"""The locator end to end under a real Prefect server: annotations → crops → training →
box inference, scored against the synthetic catalog's true boxes on photos of products
that were never annotated."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tiefvision_core.annotations.database import database_url_for
from tiefvision_core.annotations.repository import AnnotationDatabase
from tiefvision_core.catalog.boxes import read_boxes
from tiefvision_core.catalog.ingest import ingest_catalog
from tiefvision_core.catalog.manifest import image_id_for, read_manifest
from tiefvision_core.catalog.synthetic import generate_catalog
from tiefvision_core.config import load_settings
from tiefvision_core.errors import IncompatibleModel, InputError
from tiefvision_core.locator.evaluation import evaluate_boxes
from tiefvision_core.locator.locate import LocateSummary
from tiefvision_core.storage.stores import LocalStore, Store
from tiefvision_core.storage.urls import open_store

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

ANNOTATED_PRODUCTS = 10  # of 16: 40 annotated photos, 24 never-annotated ones


@dataclass
class Trained:
    root: Path
    images: Path
    store_url: str
    truth: pd.DataFrame  # image_id, left…bottom, width, height, annotated
    run: object
    located: LocateSummary


def _truth(catalog: Path, store: Store) -> pd.DataFrame:
    boxes = pd.read_csv(catalog / "boxes.csv")
    boxes["image_id"] = boxes["image"].map(image_id_for)
    products = sorted(boxes["image"].str.split("/").str[0].unique())
    boxes["annotated"] = boxes["image"].str.split("/").str[0].isin(products[:ANNOTATED_PRODUCTS])
    sizes = read_manifest(store).select(["image_id", "width", "height"]).to_pandas()
    return boxes.merge(sizes, on="image_id")


def _import_boxes(store_url: str, rows: pd.DataFrame, path: Path) -> None:
    rows[["image", "left", "top", "right", "bottom"]].to_csv(path, index=False)
    store = open_store(store_url)
    with AnnotationDatabase(database_url_for(load_settings(store_url=store_url))) as annotations:
        report = annotations.import_boxes(path, read_manifest(store))
    assert not report.refused and report.imported == len(rows)


@pytest.fixture(scope="module")
def trained(prefect_harness, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from flows.locate import locate
    from flows.train_locator import train_locator

    root = tmp_path_factory.mktemp("locator")
    generate_catalog(root / "catalog", products=16, views=4, seed=11)
    images = root / "images"
    shutil.copytree(root / "catalog" / "images", images)
    store_url = (root / "store").as_uri()
    store = open_store(store_url)
    ingest_catalog(LocalStore(images, create=False), store)
    truth = _truth(root / "catalog", store)
    _import_boxes(store_url, truth[truth["annotated"]], root / "annotated.csv")
    run = train_locator(store=store_url)
    located = locate(store=store_url)
    return Trained(root, images, store_url, truth, run, located)


def test_trained_locator_beats_baselines_on_never_annotated_photos(trained: Trained) -> None:
    store = open_store(trained.store_url)
    held_out = trained.truth[~trained.truth["annotated"]]
    evaluation = evaluate_boxes(
        read_boxes(store, trained.run.version),
        held_out,
        trained.truth[trained.truth["annotated"]],
    )
    assert evaluation.images == len(held_out) == 24
    # Lower than the 0.75 / 95 % targets (measured on a larger catalog by bench/locator.py):
    # 32 training photos here. Still far above both baselines.
    assert evaluation.locator.mean_iou >= 0.6, evaluation.as_dict()
    assert evaluation.locator.share_iou_05 >= 0.85, evaluation.as_dict()
    assert evaluation.locator.mean_iou >= evaluation.whole_image.mean_iou + 0.25
    assert evaluation.locator.mean_iou >= evaluation.centre_median.mean_iou + 0.2
    # The run's own evaluation (test split of the annotated photos) is reported too.
    assert trained.run.evaluation["locator"]["mean_iou"] >= 0.6
    assert trained.located.located == 64 and trained.located.rejected == 0


def test_model_records_what_it_was_trained_on(trained: Trained) -> None:
    store = open_store(trained.store_url)
    prefix = f"models/locator/{trained.run.version}/"
    metadata = json.loads(store.get_bytes(prefix + "metadata.json"))
    snapshot = metadata["annotations"]["snapshot"]
    assert store.exists(snapshot)
    assert len(store.read_parquet(snapshot)) == 40
    assert metadata["encoder_version"].startswith("efficientnet_lite0-imagenet-")
    assert metadata["best_epoch"] >= 1 and len(metadata["metrics"]) >= metadata["best_epoch"]
    assert len(metadata["target_mean"]) == len(metadata["target_std"]) == 4
    for name in ("weights.pt", "heldout-boxes.png", "iou-histogram.png"):
        assert store.exists(prefix + name), name
    assert store.read_pointer("models/locator/CURRENT") == trained.run.version

    windows = store.read_parquet(f"crops/{metadata['crops_dataset']}/windows.parquet")
    splits = windows.select(["image_id", "split"]).to_pandas().drop_duplicates()
    assert splits["image_id"].is_unique, "an image contributes to both splits"
    assert set(splits["split"]) == {"train", "test"}
    annotated_ids = set(trained.truth.loc[trained.truth["annotated"], "image_id"])
    assert set(splits["image_id"]) <= annotated_ids, "unannotated photos must not train"


def test_locate_is_incremental_and_crops_resume(trained: Trained) -> None:
    from flows.crops import crops
    from flows.locate import locate

    again = locate(store=trained.store_url)
    assert (again.located, again.already_located) == (0, 64)

    # A new photo is the only one located by the next run; a copy of a photo under a new
    # name (the same bytes) gets that photo's box without being located again.
    source = next(trained.images.rglob("*.jpg"))
    with Image.open(source) as photo:
        photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(trained.images / "new-photo.jpg")
    shutil.copy(source, trained.images / "copy-of-a-photo.jpg")
    store = open_store(trained.store_url)
    ingest_catalog(LocalStore(trained.images, create=False), store)
    more = locate(store=trained.store_url)
    assert (more.located, more.already_located) == (1, 65)
    boxes = read_boxes(store, more.locator_version).set_index("image_id")
    copied = boxes.loc[image_id_for("copy-of-a-photo.jpg")]
    original = boxes.loc[image_id_for(source.relative_to(trained.images).as_posix())]
    assert list(copied[["left", "top", "right", "bottom"]]) == list(
        original[["left", "top", "right", "bottom"]]
    )

    dataset = crops(store=trained.store_url)
    assert dataset.dataset_id == trained.run.dataset_id  # same annotations: same dataset


def test_locator_of_another_encoder_version_is_refused(trained: Trained) -> None:
    from flows.locate import locate

    with pytest.raises(IncompatibleModel) as error:
        locate(store=trained.store_url, weights="none")
    message = str(error.value)
    assert "efficientnet_lite0-imagenet-" in message and "efficientnet_lite0-random-" in message


def test_locate_cli_prints_one_photo_box_as_json(trained: Trained) -> None:
    row = trained.truth[~trained.truth["annotated"]].iloc[0]
    photo = trained.images / row["image"]
    command = ["locate", str(photo), "--json", "--store", trained.store_url]
    result = subprocess.run(
        [sys.executable, "-m", "tiefvision_cli.main", *command],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout)
    assert set(answer) == {"box", "score", "fallback", "low_confidence"}
    left, top, right, bottom = answer["box"]
    assert 0 <= left < right <= row["width"] and 0 <= top < bottom <= row["height"]
    true_box = row[["left", "top", "right", "bottom"]].to_numpy(float)
    from tiefvision_core.locator.evaluation import iou

    assert iou(true_box, answer["box"]) >= 0.5


def test_training_with_too_few_annotations_says_how_many(tmp_path: Path) -> None:
    from flows.train_locator import train_locator

    generate_catalog(tmp_path / "catalog", products=3, views=2, seed=2)
    store_url = (tmp_path / "store").as_uri()
    store = open_store(store_url)
    ingest_catalog(LocalStore(tmp_path / "catalog" / "images", create=False), store)
    truth = _truth(tmp_path / "catalog", store)
    _import_boxes(store_url, truth, tmp_path / "boxes.csv")
    with pytest.raises(InputError, match=r"at least 20 catalog images; 6 usable"):
        train_locator(store=store_url)
