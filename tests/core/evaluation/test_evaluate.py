"""``tiefvision evaluate``'s core on a small synthetic catalog: the live locator scored on
the annotated photos it did not train on, each live space's retrieval scored with
same-product ground truth, the results written next to the versions they score.

The locator's artefacts (metadata, crops plan, located boxes) and the index vectors are
written directly — training and encoding would cost minutes and are tested elsewhere — so
every expected number is computed here, independently, from the same inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tiefvision_core.catalog.ingest import ingest_catalog
from tiefvision_core.catalog.manifest import image_id_for, read_manifest
from tiefvision_core.catalog.synthetic import generate_catalog
from tiefvision_core.evaluation.evaluate import evaluate_catalog, evaluate_space
from tiefvision_core.storage.layout import (
    LOCATOR_CURRENT,
    SIMILARITY_PREFIX,
    boxes_prefix,
    crops_work_key,
    index_evaluation_key,
    locator_evaluation_key,
    locator_prefix,
)
from tiefvision_core.storage.stores import LocalStore, Store
from tiefvision_core.vector_index.publish import publish_index

LOCATOR = "20260101T000000Z-0000aaaa"
SIMILARITY = "20260101T000000Z-0000bbbb"
DATASET = "d" * 16
COORDS = ["left", "top", "right", "bottom"]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Written out here, not imported: the test checks the stage's arithmetic."""
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (union - inter)


def expected_retrieval(vectors: np.ndarray, labels: np.ndarray, queries: np.ndarray):
    """P@1, P@5, mAP@10 by brute force: every other photo ranked by inner product."""
    p1, p5, aps = [], [], []
    for q in queries:
        scores = vectors @ vectors[q]
        scores[q] = -np.inf
        ranked = np.argsort(-scores)[:10]
        rel = labels[ranked] == labels[q]
        others = int((labels == labels[q]).sum()) - 1
        p1.append(rel[0])
        p5.append(rel[:5].mean())
        hits = np.cumsum(rel) / np.arange(1, 11)
        aps.append(float((hits * rel).sum()) / min(10, others))
    return float(np.mean(p1)), float(np.mean(p5)), float(np.mean(aps))


def truth_of_catalog(root: Path, store: Store) -> pd.DataFrame:
    """A 6-product × 3-view synthetic catalog ingested into ``store`` with its product ids:
    one row per photo with its sha256, size, product_id and true box (from boxes.csv)."""
    generate_catalog(root / "catalog", products=6, views=3, seed=3, size=(96, 120))
    ingest_catalog(
        LocalStore(root / "catalog" / "images", create=False),
        store,
        metadata=root / "catalog" / "products.csv",
    )
    manifest = read_manifest(store)
    assert manifest is not None
    photos = manifest.select(["image_id", "sha256", "width", "height", "product_id"]).to_pandas()
    boxes = pd.read_csv(root / "catalog" / "boxes.csv")
    boxes["image_id"] = boxes["image"].map(image_id_for)
    truth = photos.merge(boxes[["image_id", *COORDS]], on="image_id").sort_values("image_id")
    return truth.reset_index(drop=True)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("evaluate")
    return root, truth_of_catalog(root, LocalStore(root / "store"))


def write_locator(store: Store, truth: pd.DataFrame) -> tuple[set[str], set[str], pd.DataFrame]:
    """Train split: the first 8 photos; test: the next 6; the last 4 never in the dataset.
    Train photos get perfect boxes (a stage scoring them would look better than it is),
    the others a shifted box or, for two, the whole photo (fallback)."""
    train, test = set(truth["image_id"][:8]), set(truth["image_id"][8:14])
    work = truth[truth["image_id"].isin(train | test)]
    store.write_parquet(
        crops_work_key(DATASET),
        pa.table(
            {
                "image_id": work["image_id"],
                "sha256": work["sha256"],
                "uri": ["x"] * len(work),
                "width": work["width"],
                "height": work["height"],
                "box": [list(map(int, b)) for b in work[COORDS].to_numpy()],
                "split": ["train" if i in train else "test" for i in work["image_id"]],
            }
        ),
    )
    meta = {"crops_dataset": DATASET, "encoder_version": "x"}
    store.put_bytes(locator_prefix(LOCATOR) + "metadata.json", json.dumps(meta).encode())
    store.publish_pointer(LOCATOR_CURRENT, LOCATOR)
    predicted = truth[COORDS].to_numpy(np.int64).copy()
    held = ~truth["image_id"].isin(train).to_numpy()
    predicted[held] += np.array([5, 3, 9, 6]) * (1 + np.arange(held.sum()) % 3)[:, None]
    fallback = np.zeros(len(truth), bool)
    fallback[np.flatnonzero(held)[:2]] = True
    whole = np.stack([np.zeros(len(truth)), np.zeros(len(truth)), truth.width, truth.height], 1)
    predicted[fallback] = whole[fallback]
    predicted = np.minimum(predicted, whole[:, [2, 3, 2, 3]]).astype(np.int64)
    store.write_parquet(
        boxes_prefix(LOCATOR) + "part-0.parquet",
        pa.table(
            {
                "image_id": truth["image_id"],
                "sha256": truth["sha256"],
                "locator_version": [LOCATOR] * len(truth),
                "box": pa.array([list(map(int, b)) for b in predicted], pa.list_(pa.int32(), 4)),
                "score": pa.array([0.9] * len(truth), pa.float32()),
                "positions_kept": pa.array([3] * len(truth), pa.int32()),
                "fallback": fallback,
                "reason": pa.array([None] * len(truth), pa.string()),
                "detail": pa.array([None] * len(truth), pa.string()),
            }
        ),
    )
    expected = pd.DataFrame({"image_id": truth["image_id"], "fallback": fallback})
    expected["iou"] = _iou(predicted.astype(float), truth[COORDS].to_numpy(float))
    return train, test, expected[held]


def publish_vectors(
    store: Store, space: str, truth: pd.DataFrame, *, seed: int, source: dict
) -> tuple[np.ndarray, str]:
    """A live ``space`` index of made-up vectors: each product a direction, each photo that
    direction plus noise (unit rows). Returns the vectors and the version."""
    rng = np.random.default_rng(seed)
    centres = {p: rng.normal(size=32) for p in sorted(set(truth["product_id"]))}
    rows = np.stack([centres[p] + 1.1 * rng.normal(size=32) for p in truth["product_id"]])
    vectors = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    ids = truth[["image_id", "sha256", "product_id"]].assign(box=[[0, 0, 1, 1]] * len(truth))
    version = publish_index(store, space, vectors, ids, grid=(32, 1, 1), source=source)
    return vectors, version.version


def test_the_locator_is_scored_on_held_out_photos_and_spaces_on_their_products(
    catalog, tmp_path: Path
) -> None:
    root, truth = catalog
    store = LocalStore(root / "store")
    train, test, expected_boxes = write_locator(store, truth)
    held_products = sorted(set(truth["product_id"]))[:2]
    store.put_bytes(
        f"{SIMILARITY_PREFIX}{SIMILARITY}/metadata.json",
        json.dumps({"held_out_products": held_products}).encode(),
    )
    unsupervised, live_u = publish_vectors(store, "unsupervised", truth, seed=1, source={})
    supervised, live_s = publish_vectors(
        store, "supervised", truth, seed=2, source={"model_version": SIMILARITY}
    )
    annotated = truth[["image_id", "sha256", "width", "height", *COORDS]]

    report = evaluate_catalog(store, annotated)

    # Locator: the 6 test photos plus the 4 it never saw; never its 8 train photos.
    locator = report.locator
    assert locator is not None and report.notes == ()
    assert train.isdisjoint(set(expected_boxes["image_id"]))
    assert test < set(expected_boxes["image_id"])
    assert locator["images"] == locator["held_out_annotated"] == len(truth) - len(train) == 10
    assert (locator["never_seen"], locator["trained_on"]) == (4, 8)
    assert locator["fallbacks"] == 2
    scores = locator["locator"]
    assert isinstance(scores, dict)
    ious = expected_boxes["iou"].to_numpy()
    assert scores["mean_iou"] == pytest.approx(ious.mean(), abs=1e-4)
    assert scores["share_iou_05"] == pytest.approx((ious >= 0.5).mean(), abs=1e-4)
    assert scores["share_iou_07"] == pytest.approx((ious >= 0.7).mean(), abs=1e-4)
    assert scores["mean_iou"] < 1.0  # the perfect train boxes stayed out
    whole = locator["whole_image"]
    assert isinstance(whole, dict) and 0 < whole["mean_iou"] < 1

    # Retrieval: the unsupervised space on every photo, the supervised one on held-out
    # products only (queries still search the whole live gallery).
    labels = truth["product_id"].to_numpy()
    everyone = np.arange(len(truth))
    held = np.flatnonzero(np.isin(labels, held_products))
    for space, vectors, queries in (
        ("unsupervised", unsupervised, everyone),
        ("supervised", supervised, held),
    ):
        got = report.retrieval[space]
        p1, p5, map10 = expected_retrieval(vectors, labels, queries)
        assert got["queries"] == len(queries), space
        assert got["precision_at_1"] == pytest.approx(p1, abs=1e-4), space
        assert got["precision_at_5"] == pytest.approx(p5, abs=1e-4), space
        assert got["map_at_10"] == pytest.approx(map10, abs=1e-4), space
    assert report.retrieval["supervised"]["products"] == 2
    assert set(labels[held]) == set(held_products)

    # Written next to the versions they score, readable by a later run.
    keys = {
        locator_evaluation_key(LOCATOR): locator,
        index_evaluation_key("unsupervised", live_u): report.retrieval["unsupervised"],
        index_evaluation_key("supervised", live_s): report.retrieval["supervised"],
    }
    for key, value in keys.items():
        assert json.loads(store.get_bytes(key)) == value
    assert sorted(report.written) == sorted(store.uri(k) for k in keys)
    assert json.loads(json.dumps(report.as_dict()))["locator"] == locator
    assert next(row["what"] for row in report.rows()) == "boxes: locator"

    # Each space's mAP@10 comes with its interval, and the gain of training on the held-out
    # products is the paired difference on the same photos, with its own interval.
    for space in ("unsupervised", "supervised"):
        low, high = report.retrieval[space]["map_at_10_interval"]  # type: ignore[misc]
        assert low <= report.retrieval[space]["map_at_10"] <= high
    assert report.gain is not None
    untrained_on_held = expected_retrieval(unsupervised, labels, held)[2]
    gain = expected_retrieval(supervised, labels, held)[2] - untrained_on_held
    assert report.gain["queries"] == len(held) and report.gain["products"] == 2
    assert report.gain["unsupervised_map_at_10"] == pytest.approx(untrained_on_held, abs=1e-4)
    assert report.gain["gain"] == pytest.approx(gain, abs=1e-4)
    low, high = report.gain["gain_interval"]  # type: ignore[misc]
    assert low <= report.gain["gain"] <= high
    row = report.rows()[-1]
    assert row["what"] == "gain: supervised − unsupervised" and "[" in str(row["score"])


def test_a_catalog_without_product_ids_or_models_is_skipped_with_a_reason(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store")
    report = evaluate_catalog(store)
    assert report.locator is None and report.retrieval == {} and report.written == ()
    assert any("train-locator" in note for note in report.notes)
    assert any("rebuild-index --space supervised" in note for note in report.notes)

    vectors = np.eye(4, 32, dtype=np.float32)
    ids = pd.DataFrame({"image_id": list("abcd"), "sha256": list("abcd")})
    publish_index(
        store,
        "unsupervised",
        vectors,
        ids.assign(box=[[0, 0, 1, 1]] * 4),
        grid=(32, 1, 1),
        source={},
    )
    scores, why = evaluate_space(store, "unsupervised")
    assert scores is None and why is not None and "no product ids" in why


def test_the_locator_row_shows_low_confidence_boxes_when_the_evaluation_counts_them() -> None:
    """Evaluations of locators from before the low-confidence rule have no such count:
    the row reads them as they are."""
    from tiefvision_core.evaluation.evaluate import EvaluationReport

    scores = {"mean_iou": 0.8, "share_iou_05": 0.9, "share_iou_07": 0.7}
    base = {"images": 10, "fallbacks": 1, "locator": scores}
    base |= {"whole_image": scores, "centre_median": scores}
    older = EvaluationReport(locator=base).rows()[0]["score"]
    newer = EvaluationReport(locator={**base, "low_confidence": 3}).rows()[0]["score"]
    assert "1 fallbacks" in str(older) and "low-confidence" not in str(older)
    assert str(newer).endswith("1 fallbacks · 3 low-confidence")
