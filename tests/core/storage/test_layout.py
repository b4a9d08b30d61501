"""Storage keys are a file format: stores in the field hold them, so every layout key and
prefix is pinned here to its literal value, and every stage must spell its keys through
:mod:`tiefvision_core.storage.layout`."""

from __future__ import annotations

import pytest

from tiefvision_core.storage import layout

PINNED = {
    "MANIFEST_PREFIX": "catalog/manifest/",
    "MANIFEST_CURRENT": "catalog/manifest/CURRENT",
    "REJECTS_PREFIX": "catalog/rejects/",
    "STAGING_PREFIX": "catalog/staging/",
    "CROPS_PREFIX": "crops/",
    "CROPS_LATEST": "crops/LATEST",
    "LOCATOR_PREFIX": "models/locator/",
    "LOCATOR_CURRENT": "models/locator/CURRENT",
    "SIMILARITY_PREFIX": "models/similarity/",
    "SIMILARITY_CURRENT": "models/similarity/CURRENT",
    "MODEL_PREFIXES": ("models/locator/", "models/similarity/"),
    "BOXES_PREFIX": "boxes/",
    "ENCODINGS_PREFIX": "encodings/",
    "INDEXES_PREFIX": "indexes/",
    "INDEX_STAGING": "indexes/.staging",
    "SNAPSHOT_PREFIX": "annotations/snapshots/",
    "LOCK_PREFIX": "locks/",
    "EVALUATION_NAME": "evaluation.json",
}

CALLS = [
    (layout.current_key, ("models/x/",), "models/x/CURRENT"),
    (layout.manifest_key, ("v7",), "catalog/manifest/v7.parquet"),
    (layout.rejects_key, ("v7",), "catalog/rejects/v7.parquet"),
    (layout.crops_prefix, ("d1",), "crops/d1/"),
    (layout.crops_dataset_key, ("d1",), "crops/d1/dataset.json"),
    (layout.crops_work_key, ("d1",), "crops/d1/_work.parquet"),
    (layout.locator_evaluation_key, ("l3",), "models/locator/l3/evaluation.json"),
    (layout.locator_prefix, ("l3",), "models/locator/l3/"),
    (layout.boxes_prefix, ("l3",), "boxes/l3/"),
    (
        layout.encodings_prefix,
        ("efficientnet_lite0", "box", "e-1"),
        "encodings/efficientnet_lite0/box/e-1/",
    ),
    (layout.index_prefix, ("supervised",), "indexes/supervised/"),
    (layout.index_current, ("unsupervised",), "indexes/unsupervised/CURRENT"),
    (layout.index_evaluation_key, ("supervised", "v2"), "indexes/supervised/v2/evaluation.json"),
]


@pytest.mark.parametrize(("name", "value"), sorted(PINNED.items()))
def test_layout_constant_is_pinned(name: str, value: object) -> None:
    assert getattr(layout, name) == value


@pytest.mark.parametrize(
    ("function", "args", "key"), CALLS, ids=lambda v: getattr(v, "__name__", "")
)
def test_layout_function_is_pinned(function, args: tuple[str, ...], key: str) -> None:
    assert function(*args) == key


def test_every_public_layout_name_is_pinned() -> None:
    """A key added to the layout without a pin here could change unnoticed."""
    pinned = set(PINNED) | {function.__name__ for function, _, _ in CALLS}
    assert set(layout.__all__) == pinned


def test_stages_use_the_layout() -> None:
    """The stages' own names for their keys are the layout's (one spelling, not two)."""
    from tiefvision_core.catalog import manifest
    from tiefvision_core.encoding.shards import shard_prefix
    from tiefvision_core.storage.lock import lock_key
    from tiefvision_core.vector_index.versions import space_prefix

    assert manifest.MANIFEST_CURRENT is layout.MANIFEST_CURRENT
    assert not hasattr(manifest, "CURRENT_KEY")  # no second name for the same key
    assert shard_prefix("alexnet", "grid", "a-1") == layout.encodings_prefix(
        "alexnet", "grid", "a-1"
    )
    assert space_prefix("unsupervised") == layout.index_prefix("unsupervised")
    assert lock_key("reindex") == "locks/reindex.json"
