"""Located-box records (``boxes/<version>/part-*.parquet``) carry the low-confidence flag
beside ``fallback``, and parts written before the flag existed still read."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from tiefvision_core.catalog.boxes import read_boxes
from tiefvision_core.encoding.requests import EncodedBatch
from tiefvision_core.locator.locate import LocatePlan, LocateShard, locate_shard
from tiefvision_core.locator.model import LocatorHeads, TargetScaler, WindowGeometry
from tiefvision_core.locator.model_files import load_locator, save_locator
from tiefvision_core.storage.stores import LocalStore

GEOMETRY = WindowGeometry(stride=32, crop_size=224, kernel=(7, 7))
SCALES = (320, 448)
#: image_id → (width, height): "big" has windows at both scales; "strip" none (its
#: inputs are less than one window high at both).
PHOTOS = {"big": (640, 480), "strip": (1000, 100)}


def _heads(logit: float) -> LocatorHeads:
    heads = LocatorHeads(8, (7, 7), reduced=4, hidden=4, dropout=0.0)
    with torch.no_grad():
        for branch, bias in ((heads.classifier, [logit]), (heads.regressor, [0, 0, 1, 1])):
            branch[-1].weight.zero_()
            branch[-1].bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return heads.eval()


class _Runtime:
    """Answers every request with a map of the input's grid (no photo is read)."""

    def stream(self, requests):
        for request in requests:
            width, height = request.whole_size(GEOMETRY.stride)
            maps = np.ones((1, 8, height // 32, width // 32), np.float32)
            yield EncodedBatch([request], maps, np.zeros(1, bool), [])


def _plan(store: LocalStore, version: str) -> tuple[LocatePlan, LocateShard]:
    rows = [
        {
            "image_id": i,
            "sha256": f"sha-{i}",
            "source_uri": f"file:///{i}.jpg",
            "width": w,
            "height": h,
        }
        for i, (w, h) in PHOTOS.items()
    ]
    prefix = f"boxes/{version}/"
    store.write_parquet(f"{prefix}_plans/p.parquet", pa.Table.from_pylist(rows))
    shard = LocateShard("s0", 0, len(rows))
    return LocatePlan(prefix, f"{prefix}_plans/p.parquet", (shard,), len(rows), 0), shard


def test_records_flag_low_confidence_apart_from_the_whole_photo_fallback(tmp_path) -> None:
    store = LocalStore(tmp_path)
    saved = save_locator(
        store,
        _heads(-20.0),  # no position reaches the threshold
        TargetScaler((0.0,) * 4, (1.0,) * 4),
        geometry=GEOMETRY,
        scales=SCALES,
        threshold=0.8,
        metadata={"encoder_version": "fake-1"},
        best_positions=3,
    )
    model = load_locator(store)
    assert (model.min_positions, model.best_positions) == (1, 3)  # the rule travels
    plan, shard = _plan(store, saved.version)
    part = locate_shard(store, _Runtime(), model, plan, shard)  # type: ignore[arg-type]
    assert (part.located, part.fallback, part.low_confidence) == (2, 1, 1)
    records = {r["image_id"]: r for r in store.read_parquet(plan.shard_key(shard)).to_pylist()}
    assert records["big"]["low_confidence"] is True and records["big"]["fallback"] is False
    assert records["big"]["positions_kept"] == 3
    assert records["big"]["box"] != [0, 0, 640, 480]
    assert records["strip"]["fallback"] is True and records["strip"]["low_confidence"] is False
    assert records["strip"]["box"] == [0, 0, 1000, 100]


def test_a_model_and_a_part_from_before_the_flag_still_read(tmp_path) -> None:
    import json

    store = LocalStore(tmp_path)
    saved = save_locator(
        store,
        _heads(20.0),
        TargetScaler((0.0,) * 4, (1.0,) * 4),
        geometry=GEOMETRY,
        scales=SCALES,
        threshold=0.8,
        metadata={"encoder_version": "fake-1"},
    )
    key = f"models/locator/{saved.version}/metadata.json"
    metadata = json.loads(store.get_bytes(key))
    del metadata["low_confidence_rule"]  # as written before the rule existed
    store.put_bytes(key, json.dumps(metadata).encode())
    model = load_locator(store)
    assert (model.min_positions, model.best_positions) == (1, 5)  # today's defaults
    old = pa.table(
        {
            "image_id": ["big"],
            "sha256": ["sha-big"],
            "locator_version": [saved.version],
            "box": pa.array([[1, 2, 30, 40]], pa.list_(pa.int32(), 4)),
            "score": pa.array([0.9], pa.float32()),
            "positions_kept": pa.array([4], pa.int32()),
            "fallback": [False],
            "reason": pa.array([None], pa.string()),
            "detail": pa.array([None], pa.string()),
        }
    )
    store.write_parquet(f"boxes/{saved.version}/part-old.parquet", old)
    boxes = read_boxes(store, saved.version, current_only=False)
    assert boxes[["left", "top", "right", "bottom"]].iloc[0].tolist() == [1, 2, 30, 40]
    assert not boxes["fallback"].iloc[0]
    # A locate run resumed across the upgrade: a part with the flag beside the old one.
    new = old.append_column("low_confidence", pa.array([True], pa.bool_()))
    new = new.set_column(0, "image_id", pa.array(["small"])).set_column(
        1, "sha256", pa.array(["sha-small"])
    )
    store.write_parquet(f"boxes/{saved.version}/part-new.parquet", new)
    both = read_boxes(store, saved.version, current_only=False).set_index("image_id")
    assert both["low_confidence"].to_dict() == {"big": False, "small": True}
