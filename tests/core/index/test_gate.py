"""The regression gate: a new index version goes live only when its retrieval (mAP@10 by
product, as ``tiefvision evaluate`` scores it) is no worse than the live one's beyond the
tolerance; a refused one leaves ``CURRENT`` alone and stays on storage for inspection.

Vectors are made up (each product a direction, each photo that direction plus noise), so
every expected number is computed here by brute force from the same vectors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.core.test_evaluate import expected_retrieval
from tiefvision_core.index.gate import (
    DEFAULT_GATE,
    GateComparison,
    GatePolicy,
    RegressionRefused,
    gate_markdown,
    regression_gate,
)
from tiefvision_core.index.versions import list_versions, publish_index, use_version
from tiefvision_core.storage.layout import SIMILARITY_PREFIX, index_current, index_evaluation_key
from tiefvision_core.storage.stores import LocalStore, Store

PRODUCTS, VIEWS, DIM = 8, 4, 32


def catalog(products: int = PRODUCTS, *, with_ids: bool = True) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "image_id": [f"p{p}v{v}" for p in range(products) for v in range(VIEWS)],
            "sha256": [f"sha-{p}-{v}" for p in range(products) for v in range(VIEWS)],
            "box": [[0, 0, 1, 1]] * (products * VIEWS),
        }
    )
    if with_ids:
        frame["product_id"] = [f"P{p}" for p in range(products) for _ in range(VIEWS)]
    return frame


def vectors_of(ids: pd.DataFrame, noise: float, seed: int = 0) -> np.ndarray:
    """Unit rows: the product's direction plus ``noise`` (same seed, same directions)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(PRODUCTS * 2, DIM))
    products = [int(str(i).split("v")[0][1:]) for i in ids["image_id"]]
    rows = centres[products] + noise * np.random.default_rng(seed + 1).normal(size=(len(ids), DIM))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def publish(
    store: Store,
    vectors: np.ndarray,
    ids: pd.DataFrame,
    policy: GatePolicy | None = DEFAULT_GATE,
    space: str = "unsupervised",
    source: dict | None = None,
):
    gate = None if policy is None else regression_gate(store, space, policy)
    return publish_index(
        store, space, vectors, ids, grid=(DIM, 1, 1), source=source or {}, gate=gate
    )


def brute_map(vectors: np.ndarray, ids: pd.DataFrame) -> float:
    labels = ids["product_id"].to_numpy()
    return expected_retrieval(vectors.astype(np.float16).astype(np.float32), labels,
                              np.arange(len(ids)))[2]  # fmt: skip


def test_a_worse_version_is_refused_and_stays_for_inspection_a_better_one_goes_live(
    store: Store,
) -> None:
    ids = catalog()
    clean, noisy = vectors_of(ids, 0.6), vectors_of(ids, 1.5)
    first = publish(store, noisy, ids)
    assert first.gate is not None and first.gate["decision"] == "first"

    better = publish(store, clean, ids)  # less noise: a better similarity
    assert store.read_pointer(index_current("unsupervised")) == better.version
    verdict = GateComparison.from_dict(better.gate)  # type: ignore[arg-type]
    assert verdict.decision == "passed" and verdict.live == first.version
    assert verdict.live_scores["map_at_10"] == pytest.approx(brute_map(noisy, ids), abs=1e-4)
    assert verdict.new_scores["map_at_10"] == pytest.approx(brute_map(clean, ids), abs=1e-4)
    assert verdict.delta is not None and verdict.delta > 0.02

    # A version whose vectors no longer belong to their photos' products: shuffled rows.
    shuffled = clean[np.random.default_rng(5).permutation(len(clean))]
    with pytest.raises(RegressionRefused) as refused:
        publish(store, shuffled, ids)
    new_map, live_map = brute_map(shuffled, ids), brute_map(clean, ids)
    assert live_map - new_map > 0.02
    message = str(refused.value)
    assert "\n" not in message
    assert f"mAP@10 {new_map:.3f} < live {better.version} {live_map:.3f}" in message
    assert f"kept {better.version} live" in message and "tiefvision index use" in message

    # CURRENT stays; the refused version is on storage, finished, not live, and scored.
    assert store.read_pointer(index_current("unsupervised")) == better.version
    listed = {v.version: v for v in list_versions(store, "unsupervised")}
    rejected = refused.value.comparison["new"]
    assert isinstance(rejected, str) and rejected in listed
    assert listed[rejected].finished and not listed[rejected].live
    stored = json.loads(store.get_bytes(index_evaluation_key("unsupervised", rejected)))
    assert stored["map_at_10"] == pytest.approx(new_map, abs=1e-4)
    # ... and can still be forced live by hand, as the message says.
    assert use_version(store, "unsupervised", rejected).live


def test_the_tolerance_and_allow_regression_decide_a_drop(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    ids = catalog()
    live = vectors_of(ids, 1.0)
    worse = live.copy()
    worse[:6] = vectors_of(ids, 3.0, seed=9)[:6]  # a few photos lose their product
    drop = round(brute_map(live, ids), 4) - round(brute_map(worse, ids), 4)
    assert 0.005 < drop < 0.5

    old = publish(store, live, ids).version
    with pytest.raises(RegressionRefused):
        publish(store, worse, ids, GatePolicy(tolerance=drop - 0.002))
    assert store.read_pointer(index_current("unsupervised")) == old

    forced = publish(store, worse, ids, GatePolicy(tolerance=drop - 0.002, allow_regression=True))
    assert forced.gate is not None and forced.gate["decision"] == "forced"
    assert store.read_pointer(index_current("unsupervised")) == forced.version

    store.publish_pointer(index_current("unsupervised"), old)
    inside = publish(store, worse, ids, GatePolicy(tolerance=drop + 0.002))  # within: live
    assert inside.gate is not None and inside.gate["decision"] == "passed"
    assert store.read_pointer(index_current("unsupervised")) == inside.version
    assert GateComparison.from_dict(inside.gate).delta == pytest.approx(-drop, abs=1e-4)  # type: ignore[arg-type]


def test_without_product_ids_the_gate_is_skipped_and_says_so(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    ids = catalog(with_ids=False)
    publish(store, vectors_of(ids, 0.5), ids)
    shuffled = vectors_of(ids, 0.5)[::-1].copy()  # worse, but nothing can tell
    version = publish(store, shuffled, ids)
    assert version.gate is not None and version.gate["decision"] == "skipped"
    assert "no product ids" in str(version.gate["reason"])
    assert "goes live" in str(version.gate["reason"])
    assert store.read_pointer(index_current("unsupervised")) == version.version
    assert "skipped" in gate_markdown(GateComparison.from_dict(version.gate))  # type: ignore[arg-type]


def test_a_catalog_change_is_not_a_regression(tmp_path) -> None:
    """Dropping the easiest product lowers the whole catalog's mAP@10; the photos both
    versions hold are answered as well as before: the update goes live."""
    store = LocalStore(tmp_path / "store")
    ids = catalog()
    vectors = vectors_of(ids, 1.2)
    easy = ids["product_id"] == "P7"
    vectors[easy.to_numpy()] = vectors_of(ids, 0.0)[easy.to_numpy()]  # P7: identical views
    live = publish(store, vectors, ids)
    kept = ~easy.to_numpy()
    smaller = ids[kept].reset_index(drop=True)
    assert brute_map(vectors, ids) - brute_map(vectors[kept], smaller) > 0.02

    update = publish(store, vectors[kept], smaller)
    assert update.gate is not None and update.gate["decision"] == "passed"
    verdict = GateComparison.from_dict(update.gate)  # type: ignore[arg-type]
    assert verdict.live == live.version and verdict.delta is not None
    assert verdict.new_scores["queries"] == len(smaller)
    assert "both versions ask about" in verdict.compared_on


def test_a_supervised_version_is_compared_on_the_products_both_models_held_out(
    tmp_path,
) -> None:
    store = LocalStore(tmp_path / "store")
    ids = catalog()
    for model, held in (("m-old", ["P0", "P1", "P2"]), ("m-new", ["P1", "P2", "P3"])):
        key = f"{SIMILARITY_PREFIX}{model}/metadata.json"
        store.put_bytes(key, json.dumps({"held_out_products": held}).encode())
    vectors = vectors_of(ids, 1.0)
    publish(store, vectors, ids, space="supervised", source={"model_version": "m-old"})
    new = publish(store, vectors, ids, space="supervised", source={"model_version": "m-new"})
    verdict = GateComparison.from_dict(new.gate)  # type: ignore[arg-type]
    assert verdict.decision == "passed" and verdict.delta == 0
    assert verdict.new_scores["queries"] == 2 * VIEWS  # P1 and P2 only
    stored = json.loads(store.get_bytes(index_evaluation_key("supervised", new.version)))
    assert stored["queries"] == 3 * VIEWS and stored["products"] == 3  # its own full scope


def test_the_markdown_shows_both_versions_the_delta_and_the_decision(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    ids = catalog()
    old = publish(store, vectors_of(ids, 1.5), ids).version
    new = publish(store, vectors_of(ids, 0.5), ids)
    text = gate_markdown(GateComparison.from_dict(new.gate))  # type: ignore[arg-type]
    lines = text.splitlines()
    assert any(line.startswith(f"| {old} | live |") for line in lines)
    assert any(line.startswith(f"| {new.version} | new |") for line in lines)
    assert any(line.startswith("| Δ new − live |") and "+" in line for line in lines)
    assert "**Decision: passed**" in text


def test_a_tolerance_outside_0_1_is_refused() -> None:
    from tiefvision_core.errors import ConfigError

    with pytest.raises(ConfigError, match="between 0 and 1"):
        GatePolicy(tolerance=-0.1)
