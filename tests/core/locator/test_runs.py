"""``fit_locator`` (one locator run: train → evaluate held-out photos → save) on a tiny
hand-made crops dataset: what it writes, when CURRENT switches, early stopping on a
validation split carved from the training photos, and what it refuses. The maps are made
up (4 channels whose first one lights up inside the box), so a run takes a fraction of a
second and needs no encoder."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from tiefvision_core.locator.crops import CropDataset, MapSample
from tiefvision_core.locator.model import LocatedBox, WindowGeometry
from tiefvision_core.locator.model_files import load_locator
from tiefvision_core.locator.runs import evaluate_samples, fit_locator
from tiefvision_core.locator.training import EpochMetrics, TrainConfig, validation_split
from tiefvision_core.storage.stores import LocalStore

GEOMETRY = WindowGeometry(stride=8, crop_size=24, kernel=(3, 3))
MAP_SIDE = 6  # head grid 4 × 4
IMAGE = (48, 48)
BOX = (8, 8, 40, 40)
PREFIX = "crops/ds1/"


def _sample(image_id: str, split: str, *, side: int = 48, invert: bool = False) -> MapSample:
    """One photo at one scale: channel 0 is bright on the positions inside ``BOX``, which
    are labelled foreground (background elsewhere; ``invert`` swaps the labels, so a
    split labelled that way contradicts what training learns)."""
    geometry_grid = GEOMETRY.head_grid(MAP_SIDE, MAP_SIDE)
    generator = torch.Generator().manual_seed(
        int(hashlib.sha256(image_id.encode()).hexdigest()[:8], 16)
    )
    maps = torch.randn(4, MAP_SIDE, MAP_SIDE, generator=generator) * 0.1
    maps[0, 2:4, 2:4] += 3.0
    labels = torch.zeros(geometry_grid, dtype=torch.int8)
    labels[1:3, 1:3] = 1
    if invert:
        labels = 1 - labels
    targets = torch.randn(*geometry_grid, 4, generator=generator) * 0.1
    return MapSample(
        image_id=image_id,
        split=split,
        side=side,
        maps=maps.half(),
        labels=labels,
        targets=targets,
        scale_xy=(1.0, 1.0),
        image_size=IMAGE,
        box=BOX,
    )


def _dataset() -> CropDataset:
    return CropDataset(
        dataset_id="ds1",
        prefix=PREFIX,
        encoder="toy",
        encoder_version="toy-v1",
        snapshot_key="annotations/snapshots/s1.parquet",
        snapshot_digest="d1",
        scales=(48,),
        window={"stride": GEOMETRY.stride, "crop_size": GEOMETRY.crop_size, "kernel": [3, 3]},
        images={"train": 6, "test": 3},
        windows={"train": 96, "test": 48},
        rejected=0,
        config={},
    )


def _write_work(store: LocalStore, photos: Path, image_ids: list[str], missing: set[str]) -> None:
    """The dataset's ``_work.parquet``: each photo's source URI and ingest-time sha256
    (a JPEG written for each, except those in ``missing``)."""
    rows = []
    photos.mkdir(exist_ok=True)
    for image_id in image_ids:
        buffer = io.BytesIO()
        Image.new("RGB", IMAGE, (200, 30, 40)).save(buffer, format="JPEG")
        data = buffer.getvalue()
        path = photos / f"{image_id}.jpg"
        if image_id not in missing:
            path.write_bytes(data)
        rows.append(
            {"image_id": image_id, "uri": path.as_uri(), "sha256": hashlib.sha256(data).hexdigest()}
        )
    buffer = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buffer, index=False)
    store.put_bytes(f"{PREFIX}_work.parquet", buffer.getvalue())


def _samples(*, invert_test: bool = False) -> list[MapSample]:
    train = [_sample(f"train-{i}", "train") for i in range(6)]
    # Two scales of one test photo: evaluation must give that photo one box, not two.
    test = [_sample(f"test-{i}", "test", invert=invert_test) for i in range(3)]
    test.append(_sample("test-0", "test", side=64, invert=invert_test))
    return train + test


@pytest.fixture
def run_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A store holding the dataset's work table, and ``load_samples`` answering with the
    hand-made samples (reading map shards is the crops module's job, tested there)."""
    import tiefvision_core.locator.runs as runs

    store = LocalStore(tmp_path / "store")
    state = {"samples": _samples()}
    monkeypatch.setattr(runs, "load_samples", lambda _store, _dataset: state["samples"])
    ids = sorted({s.image_id for s in state["samples"]})
    _write_work(store, tmp_path / "photos", ids, missing={"test-2"})
    return store, state


FAST = TrainConfig(max_epochs=8, patience=3, batch_size=4, reduced=8, hidden=8, dropout=0.0)


def test_a_run_saves_its_version_and_switches_current(run_setup, caplog) -> None:
    store, _ = run_setup
    epochs: list[EpochMetrics] = []
    with caplog.at_level(logging.WARNING, logger="tiefvision_core.locator.runs"):
        model, run = fit_locator(store, _dataset(), config=FAST, on_epoch=epochs.append)
    prefix = f"models/locator/{run.version}/"
    for name in ("weights.pt", "metadata.json", "heldout-boxes.png", "iou-histogram.png"):
        assert store.exists(prefix + name), name
    assert store.read_pointer("models/locator/CURRENT") == run.version == model.version
    assert run.model_uri == store.uri(prefix) and run.grid_uri == store.uri(
        prefix + "heldout-boxes.png"
    )
    # The photo whose file is gone is left out of the picture, with a warning, not fatal.
    assert any("test-2" in r.getMessage() for r in caplog.records)

    metadata = json.loads(store.get_bytes(prefix + "metadata.json"))
    assert metadata["crops_dataset"] == "ds1" and metadata["encoder_version"] == "toy-v1"
    assert metadata["annotations"] == {
        "snapshot": "annotations/snapshots/s1.parquet",
        "digest": "d1",
    }
    assert metadata["hyper_parameters"]["max_epochs"] == FAST.max_epochs
    assert [m["epoch"] for m in metadata["metrics"]] == [e.epoch for e in epochs]
    assert run.epochs == len(epochs) and 1 <= run.best_epoch <= run.epochs
    # Held-out photos are scored once each, all their scales together.
    assert run.evaluation["images"] == 3

    loaded = load_locator(store, encoder_version="toy-v1")
    assert loaded.version == run.version and loaded.threshold == 0.8
    test = [s for s in _samples() if s.split == "test"]
    again = evaluate_samples(model_as_trained(loaded), test, GEOMETRY, loaded.threshold)
    assert set(again) == {"test-0", "test-1", "test-2"}


def model_as_trained(model):
    """A loaded model seen as the ``TrainedLocator`` that ``evaluate_samples`` takes."""
    from tiefvision_core.locator.training import TrainedLocator

    return TrainedLocator(model.heads, model.scaler)


def test_an_unpublished_run_leaves_current_where_it_was(run_setup) -> None:
    store, _ = run_setup
    _, first = fit_locator(store, _dataset(), config=FAST)
    _, second = fit_locator(
        store, _dataset(), config=TrainConfig(**{**FAST.__dict__, "seed": 1}), publish=False
    )
    assert second.version != first.version
    assert store.exists(f"models/locator/{second.version}/weights.pt")
    assert store.read_pointer("models/locator/CURRENT") == first.version


def _validation_ids(config: TrainConfig) -> set[str]:
    train = [s for s in _samples() if s.split == "train"]
    _, validation = validation_split(train, fraction=config.validation_fraction, seed=config.seed)
    return {s.image_id for s in validation}


def test_early_stopping_keeps_the_best_validation_epoch(run_setup) -> None:
    store, state = run_setup
    config = TrainConfig(**{**FAST.__dict__, "max_epochs": 40, "patience": 2, "stop_on": "loss"})
    # Validation labels contradict the training ones: the better training fits, the worse
    # the validation loss, so the run must stop `patience` epochs after its best one.
    held = _validation_ids(config)
    assert held
    for sample in state["samples"]:
        if sample.image_id in held:
            sample.labels = 1 - sample.labels
    _, run = fit_locator(store, _dataset(), config=config)
    assert run.stopped_early
    assert run.epochs == run.best_epoch + config.patience < config.max_epochs
    losses = [m["test_loss"] for m in run.metrics]
    assert losses[run.best_epoch - 1] == min(losses)


def test_early_stopping_watches_training_photos_never_the_scored_ones(
    run_setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tiefvision_core.locator.runs as runs

    store, _ = run_setup
    seen: dict[str, set[str]] = {}
    real = runs.train_heads

    def spy(train, held_out, **kwargs):
        seen["fit"] = {s.image_id for s in train}
        seen["stopping"] = {s.image_id for s in held_out}
        return real(train, held_out, **kwargs)

    monkeypatch.setattr(runs, "train_heads", spy)
    _, run = fit_locator(store, _dataset(), config=FAST)
    scored = {"test-0", "test-1", "test-2"}
    assert run.evaluation["images"] == len(scored)
    assert seen["stopping"] and not seen["stopping"] & scored  # stops on unscored photos
    assert not seen["fit"] & seen["stopping"]  # and not on the photos it fits
    assert seen["fit"] | seen["stopping"] == {f"train-{i}" for i in range(6)}
    assert seen["stopping"] == _validation_ids(FAST)
    metadata = json.loads(store.get_bytes(f"models/locator/{run.version}/metadata.json"))
    assert metadata["validation_images"] == len(seen["stopping"])


@pytest.mark.parametrize("threshold", [0.0, 1.0, 1.5])
def test_a_threshold_outside_zero_one_is_refused_before_anything_is_written(
    run_setup, threshold: float
) -> None:
    store, _ = run_setup
    with pytest.raises(ValueError, match="probability in"):
        fit_locator(store, _dataset(), config=FAST, threshold=threshold)
    assert store.read_pointer("models/locator/CURRENT") is None


def test_training_windows_without_background_are_refused(run_setup) -> None:
    store, state = run_setup
    # Every training window labelled foreground: the classifier would have nothing to learn.
    for sample in state["samples"]:
        if sample.split == "train":
            sample.labels.fill_(1)
    with pytest.raises(ValueError, match="0 background"):
        fit_locator(store, _dataset(), config=FAST)
    assert store.read_pointer("models/locator/CURRENT") is None


def test_stopping_on_the_located_boxes_keeps_the_best_scored_epoch(run_setup) -> None:
    from tiefvision_core.locator.training import train_heads

    train = [s for s in _samples() if s.split == "train"]
    scores = iter([0.2, 0.5, 0.9, 0.4, 0.3, 0.95, 0.1, 0.1, 0.1, 0.1])
    config = TrainConfig(**{**FAST.__dict__, "max_epochs": 10, "patience": 2})
    trained = train_heads(
        train[:4], train[4:], kernel=(3, 3), config=config, stop_score=lambda *_: next(scores)
    )
    # Epoch 3 scores best; 4 and 5 do not beat it: stopped there, whatever the loss did.
    assert trained.best_epoch == 3 and trained.stopped_early and len(trained.history) == 5
    assert [m.test_iou for m in trained.history] == [0.2, 0.5, 0.9, 0.4, 0.3]


def test_a_run_stopping_on_iou_scores_the_validation_boxes_every_epoch(run_setup) -> None:
    store, _ = run_setup
    config = TrainConfig(**{**FAST.__dict__, "stop_on": "iou"})
    _, run = fit_locator(store, _dataset(), config=config)
    ious = [m["test_iou"] for m in run.metrics]
    assert all(0.0 <= value <= 1.0 for value in ious)
    assert ious[run.best_epoch - 1] == max(ious)
    # Watching the loss records no IoU.
    _, plain = fit_locator(
        store, _dataset(), config=TrainConfig(**{**FAST.__dict__, "stop_on": "loss"})
    )
    assert all(m["test_iou"] is None for m in plain.metrics)


def test_training_measures_the_sides_and_locate_uses_the_choice(run_setup, monkeypatch) -> None:
    """The wiring: the validation photos are located with each subset of the trained
    sides (here scored by a stand-in that knows side 40 sees nothing), and the choice is
    what the saved model locates with."""
    import tiefvision_core.locator.runs as runs

    store, state = run_setup
    state["samples"] = [
        _sample(s.image_id, s.split, side=side) for s in state["samples"] for side in (40, 48)
    ]
    seen: list[set[int]] = []

    def stand_in(trained, samples, sides, geometry, threshold):
        seen.append(set(sides))
        box = BOX if 48 in sides else (0, 0, *IMAGE)  # IoU 1.0, else 0.444
        return {s.image_id: LocatedBox(box, 0.9, 1, fallback=False) for s in samples}

    monkeypatch.setattr(runs, "located_at", stand_in)
    dataset = _dataset()
    object.__setattr__(dataset, "scales", (40, 48))
    _, run = fit_locator(store, dataset, config=FAST)
    # 40 is cheaper but loses 0.56; both sides cost more than 48 and add nothing.
    assert run.locate_sides == (48,) and run.trained_sides == (40, 48)
    assert {40} in seen and {48} in seen and {40, 48} in seen
    metadata = json.loads(store.get_bytes(f"models/locator/{run.version}/metadata.json"))
    assert metadata["scales"] == [40, 48] and metadata["locate_scales"] == [48]
    assert metadata["side_choice"]["all_sides_iou"] == 1.0
    assert load_locator(store).scales == (48,)

    # Switched off: every trained side, as before the choice existed.
    config = TrainConfig(**{**FAST.__dict__, "side_tolerance": None})
    _, every = fit_locator(store, dataset, config=config)
    assert every.locate_sides == (40, 48) and load_locator(store).scales == (40, 48)


def test_a_model_saved_before_the_choice_locates_at_every_trained_side(run_setup) -> None:
    store, _ = run_setup
    _, run = fit_locator(store, _dataset(), config=FAST)
    key = f"models/locator/{run.version}/metadata.json"
    metadata = json.loads(store.get_bytes(key))
    del metadata["locate_scales"], metadata["side_choice"]
    metadata["scales"] = [48, 64]
    store.put_bytes(key, json.dumps(metadata).encode())
    assert load_locator(store).scales == (48, 64)


def test_a_side_no_validation_photo_has_a_map_at_is_scored_as_the_whole_photo(run_setup) -> None:
    """A photo too small for a window at some side has no map there; locating it with that
    side alone gives the whole photo (what ``locate`` does), and the choice goes on — it
    failed with an IndexError when no validation photo had a map at a side."""
    store, state = run_setup
    test_only = [
        _sample(s.image_id, s.split, side=40) for s in state["samples"] if s.split == "test"
    ]
    state["samples"] = state["samples"] + test_only
    dataset = _dataset()
    object.__setattr__(dataset, "scales", (40, 48))
    model, run = fit_locator(store, dataset, config=FAST)  # an IndexError before
    assert run.locate_sides in {(40,), (48,), (40, 48)}
    metadata = json.loads(store.get_bytes(f"models/locator/{run.version}/metadata.json"))
    assert len(metadata["side_choice"]["subsets"]) == 3
    plain = [s for s in state["samples"] if s.side == 48]
    from tiefvision_core.locator.runs import located_at
    from tiefvision_core.locator.training import TrainedLocator

    located = located_at(TrainedLocator(model.heads, model.scaler), plain, (40,), GEOMETRY, 0.8)
    assert set(located) == {s.image_id for s in plain}
    assert all(b.fallback and b.box == (0, 0, *IMAGE) for b in located.values())
