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

from tests.core.evaluation.test_evaluate import expected_retrieval
from tiefvision_core.evaluation.spaces import sample_mask
from tiefvision_core.index.gate import (
    DEFAULT_GATE,
    DEFAULT_MAX_QUERIES,
    GateComparison,
    GatePolicy,
    compare_with_live,
    gate_markdown,
    regression_gate,
)
from tiefvision_core.storage.layout import SIMILARITY_PREFIX, index_current, index_evaluation_key
from tiefvision_core.storage.stores import LocalStore, Store
from tiefvision_core.vector_index.pointer import RegressionRefused
from tiefvision_core.vector_index.publish import publish_index
from tiefvision_core.vector_index.versions import list_versions, use_version

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


def brute_map(vectors: np.ndarray, ids: pd.DataFrame, asking: np.ndarray | None = None) -> float:
    """mAP@10 by brute force, every photo in the gallery, ``asking`` (a mask) the queries."""
    labels = ids["product_id"].to_numpy()
    queries = np.arange(len(ids)) if asking is None else np.flatnonzero(asking)
    return expected_retrieval(vectors.astype(np.float16).astype(np.float32), labels,
                              queries)[2]  # fmt: skip


def similarity_model(store: Store, model: str, held_out: list[str]) -> dict:
    """A similarity model's metadata saying which products it held out (all the gate
    reads of it); the supervised index's ``source`` that names it."""
    key = f"{SIMILARITY_PREFIX}{model}/metadata.json"
    store.put_bytes(key, json.dumps({"held_out_products": held_out}).encode())
    return {"model_version": model}


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
    old_model = similarity_model(store, "m-old", ["P0", "P1", "P2"])
    new_model = similarity_model(store, "m-new", ["P1", "P2", "P3"])
    vectors = vectors_of(ids, 1.0)
    publish(store, vectors, ids, space="supervised", source=old_model)
    new = publish(store, vectors, ids, space="supervised", source=new_model)
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
    assert any(line.startswith("95 % interval of Δ mAP@10") for line in lines)
    assert "**Decision: passed**" in text


def test_a_tolerance_outside_0_1_is_refused() -> None:
    from tiefvision_core.errors import ConfigError

    with pytest.raises(ConfigError, match="between 0 and 1"):
        GatePolicy(tolerance=-0.1)


HELD_OUT = ["P4", "P5", "P6", "P7"]


def test_a_first_supervised_version_must_not_be_worse_than_the_live_unsupervised_one(
    tmp_path,
) -> None:
    """The issue's grocery case: a trained model that answers the products it never saw
    worse than no training is refused, though no supervised version was live."""
    store = LocalStore(tmp_path / "store")
    ids = catalog()
    model = similarity_model(store, "m-1", HELD_OUT)
    held = ids["product_id"].isin(HELD_OUT).to_numpy()
    plain = vectors_of(ids, 0.9)
    unsupervised = publish(store, plain, ids)

    # Trained vectors that no longer belong to their photos' products: shuffled rows.
    bad = vectors_of(ids, 0.3)[np.random.default_rng(5).permutation(len(ids))]
    with pytest.raises(RegressionRefused) as refused:
        publish(store, bad, ids, space="supervised", source=model)
    assert store.read_pointer(index_current("supervised")) is None  # nothing went live
    verdict = GateComparison.from_dict(refused.value.comparison)
    assert verdict.decision == "refused"
    assert verdict.live == unsupervised.version and verdict.live_space == "unsupervised"
    assert verdict.baseline == f"unsupervised {unsupervised.version}"
    # Both on the held-out products' photos, each from its own whole gallery.
    new_map, live_map = brute_map(bad, ids, held), brute_map(plain, ids, held)
    assert live_map - new_map > 0.02
    assert verdict.new_scores["queries"] == verdict.live_scores["queries"] == held.sum()
    assert verdict.new_scores["map_at_10"] == pytest.approx(new_map, abs=1e-4)
    assert verdict.live_scores["map_at_10"] == pytest.approx(live_map, abs=1e-4)
    line = str(refused.value)
    assert f"< live unsupervised {unsupervised.version} {live_map:.3f}" in line
    assert "no supervised version goes live" in line and "\n" not in line
    text = gate_markdown(verdict)
    assert f"| {unsupervised.version} | live unsupervised |" in text
    assert f"Compared with the live unsupervised {unsupervised.version}" in text
    # The unsupervised version's own evaluation (all products) is not overwritten.
    stored = json.loads(store.get_bytes(index_evaluation_key("unsupervised", unsupervised.version)))
    assert stored["queries"] == len(ids) and stored["products"] == PRODUCTS
    # ... and the refused version is listed, forced only with allow_regression.
    forced = publish(
        store, bad, ids, GatePolicy(allow_regression=True), space="supervised", source=model
    )
    assert forced.gate is not None and forced.gate["decision"] == "forced"
    store.delete(index_current("supervised"))

    good = vectors_of(ids, 0.3)  # less noise than the unsupervised space: a better model
    better = publish(store, good, ids, space="supervised", source=model)
    verdict = GateComparison.from_dict(better.gate)  # type: ignore[arg-type]
    assert verdict.decision == "passed" and verdict.live_space == "unsupervised"
    assert verdict.new_scores["map_at_10"] == pytest.approx(brute_map(good, ids, held), abs=1e-4)
    assert store.read_pointer(index_current("supervised")) == better.version

    # Once one is live, the next supervised version is compared with it.
    later = publish(store, good, ids, space="supervised", source=model)
    verdict = GateComparison.from_dict(later.gate)  # type: ignore[arg-type]
    assert verdict.decision == "passed" and verdict.live == better.version
    assert verdict.live_space is None and verdict.baseline == better.version


def test_a_first_supervised_version_without_a_live_unsupervised_one_goes_live_first(
    tmp_path,
) -> None:
    store = LocalStore(tmp_path / "store")
    ids = catalog()
    bad = vectors_of(ids, 0.3)[np.random.default_rng(5).permutation(len(ids))]
    first = publish(
        store, bad, ids, space="supervised", source=similarity_model(store, "m", HELD_OUT)
    )
    assert first.gate is not None and first.gate["decision"] == "first"
    assert first.gate["live"] is None and first.gate["live_space"] is None
    assert store.read_pointer(index_current("supervised")) == first.version


def test_above_the_cap_both_versions_are_asked_the_same_stable_sample(tmp_path) -> None:
    """Ten of the 32 photos ask, in both versions and every run; the decision is the
    sample's: a version that breaks only photos outside it passes, one that breaks photos
    inside it is refused."""
    assert DEFAULT_MAX_QUERIES == GatePolicy().max_queries == 2000
    store = LocalStore(tmp_path / "store")
    cap = GatePolicy(max_queries=10)
    ids = catalog()
    photos = list(zip(ids["image_id"], ids["sha256"], strict=True))
    sample = sample_mask(photos, 10)
    assert sample.sum() == 10
    # The same photos whatever the order they come in (another version's rows).
    order = np.random.default_rng(1).permutation(len(photos))
    assert sample_mask([photos[i] for i in order], 10).tolist() == sample[order].tolist()

    vectors = vectors_of(ids, 0.6)
    live = publish(store, vectors, ids, cap)
    assert live.gate is not None and live.gate["sampled_from"] == len(ids)
    stored = json.loads(store.get_bytes(index_evaluation_key("unsupervised", live.version)))
    assert stored["queries"] == 10 and stored["sampled_from"] == len(ids)
    assert stored["map_at_10"] == pytest.approx(brute_map(vectors, ids, sample), abs=1e-4)

    # The new version holds its rows in another order: the sample is still the same photos.
    reordered = ids.iloc[order].reset_index(drop=True)
    new = publish(store, vectors[order], reordered, None).version  # placed, no gate
    store.publish_pointer(index_current("unsupervised"), live.version)
    verdict = compare_with_live(store, "unsupervised", new, cap)
    again = compare_with_live(store, "unsupervised", verdict.new, cap)
    assert again == verdict  # every run asks the same photos
    assert verdict.decision == "passed" and verdict.delta == 0
    assert verdict.sampled_from == len(ids) and "a sample of 10 of the 32" in verdict.compared_on
    assert verdict.new_scores["queries"] == verdict.live_scores["queries"] == 10
    assert "Sample: 10 of the 32" in gate_markdown(verdict)

    # Photos outside the sample lose their product: as queries they find nothing, as
    # gallery photos they are missed by the sampled queries too, but less. A tolerance
    # between the two drops: the sample's decides with the cap, every photo's without.
    broken = vectors.copy()
    lost = np.flatnonzero(~sample)[::2]
    broken[lost] = vectors_of(ids, 0.0, seed=42)[lost]  # other products' directions
    on_sample = brute_map(vectors, ids, sample) - brute_map(broken, ids, sample)
    on_all = brute_map(vectors, ids) - brute_map(broken, ids)
    assert on_all - on_sample > 0.02
    between = GatePolicy(tolerance=round((on_all + on_sample) / 2, 4), max_queries=10)
    passed = publish(store, broken, ids, between)
    assert passed.gate is not None and passed.gate["decision"] == "passed"
    verdict = GateComparison.from_dict(passed.gate)
    assert verdict.delta == pytest.approx(-on_sample, abs=2e-4)
    store.publish_pointer(index_current("unsupervised"), live.version)
    every = GatePolicy(tolerance=between.tolerance, max_queries=None)
    with pytest.raises(RegressionRefused) as refused:
        publish(store, broken, ids, every)
    assert refused.value.comparison["sampled_from"] is None
    assert store.read_pointer(index_current("unsupervised")) == live.version


def test_max_queries_below_1_is_refused() -> None:
    from tiefvision_core.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 1"):
        GatePolicy(max_queries=0)


def test_the_interval_rule_refuses_a_real_drop_and_lets_noise_through(tmp_path) -> None:
    """A drop beyond the tolerance carried by two of eight products: its interval (products
    resampled) includes no change, so the ``interval`` rule lets it through, while the
    default rule refuses it and says it may be noise. Every product worse: refused by both."""
    ids = catalog()
    live = vectors_of(ids, 1.0)
    few = live.copy()
    few[:6] = vectors_of(ids, 3.0, seed=9)[:6]  # photos of products 0 and 1 only
    everywhere = vectors_of(ids, 3.0, seed=9)
    for name, worse, real in (("few", few, False), ("everywhere", everywhere, True)):
        drop = round(brute_map(live, ids), 4) - round(brute_map(worse, ids), 4)
        assert drop > 0.01, name
        tolerance = drop / 2
        for rule in ("tolerance", "interval"):
            store = LocalStore(tmp_path / f"{name}-{rule}")
            old = publish(store, live, ids).version
            new = publish(store, worse, ids, None).version  # placed, no gate
            store.publish_pointer(index_current("unsupervised"), old)
            policy = GatePolicy(tolerance=tolerance, rule=rule)  # type: ignore[arg-type]
            comparison = compare_with_live(store, "unsupervised", new, policy)
            low, high = comparison.delta_interval  # type: ignore[misc]
            assert low <= comparison.delta <= high, (name, rule)  # type: ignore[operator]
            assert (high < 0) is real, (name, comparison.delta_interval)
            refused = real or rule == "tolerance"
            assert comparison.decision == ("refused" if refused else "passed"), (name, rule)
            if refused and not real:
                assert "may be noise" in comparison.reason
            if not refused:
                assert "within noise" in comparison.reason


def test_an_unknown_regression_rule_is_refused() -> None:
    from tiefvision_core.errors import ConfigError

    with pytest.raises(ConfigError, match="regression rule"):
        GatePolicy(rule="vibes")  # type: ignore[arg-type]
