"""The locate and crops stages report typed summaries (like encoding's ``EncodeSummary``):
their ``as_dict()`` is the ``--json`` contract, and a part written by an earlier run is
reported as skipped without being read or recomputed."""

from __future__ import annotations

import json

from tiefvision_core.locator.crops import CropPart, build_part
from tiefvision_core.locator.locate import (
    LocatedPart,
    LocatePlan,
    LocateShard,
    LocateSummary,
    locate_shard,
)
from tiefvision_core.storage.stores import LocalStore

#: ``tiefvision locate --json``'s keys, in order: scripts read them.
LOCATE_JSON_KEYS = [
    "locator_version",
    "images",
    "already_located",
    "located",
    "fallback",
    "rejected",
    "seconds",
    "boxes_uri",
    "low_confidence",  # added last: the keys before it keep their order
]


def _plan(shards: int = 3) -> LocatePlan:
    parts = tuple(LocateShard(f"s{i}", i * 10, i * 10 + 10) for i in range(shards))
    return LocatePlan("boxes/loc-7/", "boxes/loc-7/plan.parquet", parts, 45, 15)


def test_locate_summary_adds_up_its_parts_and_keeps_the_json_keys() -> None:
    plan = _plan()
    parts = [
        LocatedPart("a", skipped=False, located=9, fallback=2, rejected=1, low_confidence=3),
        LocatedPart("b", skipped=True),
        LocatedPart("c", skipped=False, located=10, fallback=0, rejected=0, low_confidence=1),
    ]
    summary = LocateSummary.of_parts(plan, parts, seconds=1.23456, boxes_uri="file:///s/b/")
    assert plan.locator_version == summary.locator_version == "loc-7"
    assert (summary.located, summary.fallback, summary.rejected) == (19, 2, 1)
    assert summary.low_confidence == 4
    assert (summary.images, summary.already_located, summary.seconds) == (45, 15, 1.23)
    data = summary.as_dict()
    assert list(data) == LOCATE_JSON_KEYS
    assert json.loads(json.dumps(data)) == data  # plain values only


def test_a_written_locate_part_is_skipped(tmp_path) -> None:
    store = LocalStore(tmp_path)
    plan = _plan(1)
    (shard,) = plan.shards
    store.put_bytes(plan.shard_key(shard), b"written by an earlier run")
    # Neither the runtime nor the model is touched for a part that exists.
    part = locate_shard(store, None, None, plan, shard)  # type: ignore[arg-type]
    assert part == LocatedPart(plan.shard_key(shard), skipped=True)
    assert (part.located, part.fallback, part.rejected) == (0, 0, 0)


def test_a_written_crops_part_is_skipped(tmp_path) -> None:
    class Plan:
        def part_key(self, spec: object) -> str:
            return "crops/d/part-1.parquet"

    store = LocalStore(tmp_path)
    store.put_bytes("crops/d/part-1.parquet", b"written by an earlier run")
    part = build_part(store, None, Plan(), None, (320,))  # type: ignore[arg-type]
    assert part == CropPart("crops/d/part-1.parquet", skipped=True, maps=0, rejected=0)
    assert part.seconds == 0.0


def test_the_locate_plan_covers_the_runs_catalog_not_a_later_one(tmp_path) -> None:
    """A run pins one manifest version (tiefvision_core.run): its locate plan lists that
    version's photos even when an ingest moved CURRENT meanwhile, as its encode does."""
    from types import SimpleNamespace

    from tiefvision_core.catalog.ingest import ingest_catalog
    from tiefvision_core.catalog.snapshot import CatalogSnapshot
    from tiefvision_core.catalog.synthetic import generate_catalog
    from tiefvision_core.locator.locate import plan_locate

    generate_catalog(tmp_path / "one", products=2, views=2, seed=1, size=(64, 80))
    store = LocalStore(tmp_path / "store")
    ingest_catalog(LocalStore(tmp_path / "one" / "images", create=False), store)
    pinned = CatalogSnapshot.current(store)  # the run's catalog: 4 photos
    generate_catalog(tmp_path / "one", products=3, views=2, seed=2, size=(64, 80))
    ingest_catalog(LocalStore(tmp_path / "one" / "images", create=False), store)
    assert CatalogSnapshot.current(store).version != pinned.version

    model = SimpleNamespace(version="loc-1")
    ran = plan_locate(store, model, catalog=pinned)  # type: ignore[arg-type]
    now = plan_locate(store, model)  # type: ignore[arg-type]
    assert ran.images == pinned.manifest.num_rows == 4
    assert now.images > ran.images
