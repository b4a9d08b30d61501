"""One Deep Ranking run over the catalog's box-crop encodings, and the models it saves.

Layout::

    models/similarity/<version>/weights.pt      ProjectionNet state dict
    models/similarity/<version>/metadata.json   encoder version, head, triplet sources,
                                                split (scored and validation products),
                                                config, per-epoch metrics, evaluation
    models/similarity/<version>/loss-curves.png
    models/similarity/CURRENT                   switched after the files are written

Memory: the box encodings are read ``_BLOCK`` photos at a time and kept only on the
similarity grid in float16: N × C × 3 × 3 × 2 bytes, twice with the mirrors (EfficientNet-
Lite0, C = 1280: 23 KB per photo, 4.6 GB for 100,000 photos with mirrors), plus the
unsupervised vectors (as much again as the plain maps) that mine the negatives; training
converts one batch to float32 at a time.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import torch

from tiefvision_core.catalog.snapshot import CatalogSnapshot, catalog_snapshot
from tiefvision_core.encoders import Encoder
from tiefvision_core.encoding.shards import read_encodings, row_keys, vectors_as_maps
from tiefvision_core.errors import IncompatibleModel, InputError
from tiefvision_core.similarity.deep_ranking import (
    DeepRankingConfig,
    EpochReport,
    ProjectionNet,
    fit_held_out,
)
from tiefvision_core.similarity.triplets import held_out_split, validation_split
from tiefvision_core.similarity.unsupervised import similarity_grid
from tiefvision_core.storage.layout import SIMILARITY_CURRENT, SIMILARITY_PREFIX
from tiefvision_core.storage.stores import Store

if TYPE_CHECKING:  # passed in by the caller: training never opens an index itself
    import pyarrow as pa

    from tiefvision_core.vector_index.versions import OpenedIndex

__all__ = ["SimilarityRun", "fit_similarity", "load_projection", "projected_maps"]


@dataclass(frozen=True)
class SimilarityRun:
    version: str
    train_products: int
    test_products: int
    test_triplets: int
    annotated_triplets: dict[str, int]
    unsupervised_accuracy: float
    supervised_accuracy: float
    unsupervised_map10: float
    supervised_map10: float
    best_epoch: int
    epochs: int
    metrics: list[dict[str, float]]
    model_uri: str
    validation_products: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


_BLOCK = 1024  # photos whose full encoder maps are read at once (~0.8 GB transient, Lite0)


def _encodings(
    store: Store, encoder: Encoder, block: int = _BLOCK, catalog: CatalogSnapshot | None = None
):
    """(ids, maps, flipped): the box crops on the similarity grid, float16, and their
    mirrors in the same order (None unless every photo has one). Read ``block`` photos at
    a time, so the full encoder maps of the whole catalog are never in memory at once."""
    catalog = catalog_snapshot(store, catalog)
    name, version = encoder.name, encoder.version
    keys = read_encodings(store, name, version, kind="box", columns=["box"], catalog=catalog)
    if keys.num_rows == 0:
        raise InputError("no box-crop encodings yet: run `tiefvision rebuild-index` first")
    plain_keys = keys.filter(pc.invert(keys["flipped"]))
    ids = plain_keys["image_id"].to_pylist()
    position = {image_id: i for i, image_id in enumerate(ids)}
    has_mirrors = set(keys.filter(keys["flipped"])["image_id"].to_pylist()) >= set(ids)
    all_keys = row_keys(plain_keys)
    maps = flipped = None
    for start in range(0, len(all_keys), block):
        part = read_encodings(
            store,
            name,
            version,
            kind="box",
            only=all_keys[start : start + block],
            catalog=catalog,
        )
        for mirrored in (False, True):
            if mirrored and not has_mirrors:
                continue
            rows = part.filter(part["flipped"] if mirrored else pc.invert(part["flipped"]))
            grid = similarity_grid(vectors_as_maps(rows)).astype(np.float16)
            if maps is None:
                maps = np.empty((len(ids), *grid.shape[1:]), np.float16)
                flipped = np.empty_like(maps) if has_mirrors else None
            target = flipped if mirrored else maps
            assert target is not None
            target[[position[i] for i in rows["image_id"].to_pylist()]] = grid
    assert maps is not None
    return ids, maps, flipped


def _index_neighbours(
    opened: OpenedIndex | None, encoder: Encoder, ids: list[str], dimension: int
) -> Callable[[np.ndarray, int], np.ndarray] | None:
    """The live unsupervised index (``opened``) as a neighbour search over the training
    rows (its rows renumbered to ``ids``; rows it lacks are dropped), when it holds this
    encoder's vectors on the same similarity grid; else None (the rows are scanned
    exactly)."""
    if opened is None:
        return None
    source = opened.metadata.get("source", {})
    stored_dimension = opened.index.vectors.shape[1]
    if source.get("encoder_version") != encoder.version or stored_dimension != dimension:
        return None
    position = {image_id: i for i, image_id in enumerate(ids)}
    to_row = np.array([position.get(i, -1) for i in opened.ids["image_id"]], np.int64)

    def neighbours(queries: np.ndarray, k: int) -> np.ndarray:
        _, rows = opened.index.search(queries, k)
        return np.where(rows >= 0, to_row[np.maximum(rows, 0)], -1)

    return neighbours


def _labels(manifest: pa.Table | None, ids: list[str]) -> np.ndarray:
    """Each photo's product id from the manifest the encodings were read against."""
    if manifest is None or "product_id" not in manifest.column_names:
        raise InputError(
            "Deep Ranking needs same-product ground truth: ingest with `--metadata FILE` "
            "holding a product_id column (annotated triplets alone are not enough yet)"
        )
    products = dict(
        zip(manifest["image_id"].to_pylist(), manifest["product_id"].to_pylist(), strict=True)
    )
    return np.array([str(products.get(i) or f"unlabelled:{i}") for i in ids])


def _annotated(triplets: pd.DataFrame | None, rows: dict[str, int], sides: np.ndarray):
    """Annotated triplets by the side their three photos are on (``sides``: 0 train,
    1 validation, 2 scored); (train, validation, scored, dropped: unknown or across)."""
    kept: tuple[list, list, list] = ([], [], [])
    dropped = 0
    records = [] if triplets is None else triplets.to_dict("records")
    for r in records:
        ids = (r["reference"], r["positive"], r["negative"])
        if not all(i in rows for i in ids):
            dropped += 1
            continue
        triple = tuple(rows[i] for i in ids)
        on = {int(sides[t]) for t in triple}
        if len(on) == 1:
            kept[on.pop()].append(triple)
        else:
            dropped += 1
    return *kept, dropped


def _curves_png(history: list[EpochReport], before: float) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    epochs = [e.epoch for e in history]
    left.plot(epochs, [e.train_loss for e in history], label="train")
    left.plot(epochs, [e.test_loss for e in history], label="validation")
    left.set_xlabel("epoch")
    left.set_ylabel("hinge loss")
    left.legend()
    right.plot(epochs, [e.test_accuracy for e in history], label="supervised")
    right.axhline(before, color="grey", linestyle=":", label="unsupervised")
    right.set_xlabel("epoch")
    right.set_ylabel("validation score (stopping)")
    right.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


@torch.no_grad()
def projected_maps(net: ProjectionNet, maps: np.ndarray, batch: int = 256) -> np.ndarray:
    """Maps through the projection (the supervised space's grid encodings)."""
    net.eval()
    out = [
        net(torch.from_numpy(np.asarray(maps[i : i + batch], np.float32))).numpy()
        for i in range(0, len(maps), batch)
    ]
    return np.concatenate(out) if out else np.asarray(maps, np.float32)


def fit_similarity(
    store: Store,
    encoder: Encoder,
    *,
    triplets: pd.DataFrame | None = None,
    snapshot: dict[str, object] | None = None,
    config: DeepRankingConfig | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    neighbour_index: OpenedIndex | None = None,
    test_products: Collection[str] | None = None,
    catalog: CatalogSnapshot | None = None,
) -> SimilarityRun:
    """Train the projection on the catalog's box crops; save it and switch CURRENT.

    Three disjoint sets of products: training, validation (stops training) and the scored
    ones (``test_products`` when given, else a seeded ``test_fraction``), which neither
    training nor stopping sees. ``neighbour_index``: the live unsupervised index, whose
    search then finds the hard negatives (see
    :func:`tiefvision_core.vector_index.versions.open_live_index`); passed in, not opened here, so
    similarity training never reaches into the index stage. ``catalog``: the run's
    snapshot (default: the store's current catalog), read once for the encodings and the
    product ids."""
    config = config or DeepRankingConfig()
    catalog = catalog_snapshot(store, catalog)  # the run's: encodings and labels agree
    ids, maps, flipped = _encodings(store, encoder, catalog=catalog)
    labels = _labels(catalog.manifest, ids)
    try:
        split = held_out_split(labels, config, test_products)
        validation = validation_split(labels, split, config)
    except ValueError as error:
        raise InputError(str(error)) from None
    held_out = set(labels[split])
    rows = {image_id: i for i, image_id in enumerate(ids)}
    sides = np.where(split, 2, np.where(validation, 1, 0))
    extra_train, extra_validation, extra_test, dropped = _annotated(triplets, rows, sides)
    dimension = maps.shape[1] * maps.shape[2] * maps.shape[3]
    fit = fit_held_out(
        maps,
        labels,
        split,
        flipped=flipped,
        config=config,
        neighbours=_index_neighbours(neighbour_index, encoder, ids, dimension),
        extra_train=extra_train,
        extra_test=extra_test,
        on_epoch=on_epoch,
        validation=validation,
        extra_validation=extra_validation,
    )
    trained, test_triplets = fit.trained, fit.test_triplets
    unsupervised_map, supervised_map = fit.unsupervised_map10, fit.supervised_map10

    buffer = io.BytesIO()
    torch.save(trained.net.state_dict(), buffer)
    weights = buffer.getvalue()
    version = (
        f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{hashlib.sha256(weights).hexdigest()[:8]}"
    )
    prefix = f"{SIMILARITY_PREFIX}{version}/"
    triplet_counts = {
        "annotated_train": len(extra_train),
        "annotated_validation": len(extra_validation),
        "annotated_test": len(extra_test),
        "annotated_dropped": dropped,
        "validation": len(fit.validation_triplets),
        "test": len(test_triplets),
    }
    metadata = {
        "version": version,
        "encoder": encoder.name,
        "encoder_version": encoder.version,
        "channels": int(maps.shape[1]),
        "head": {"hidden": config.hidden},
        "similarity_grid": [int(maps.shape[2]), int(maps.shape[3])],
        "annotations": snapshot,
        "triplets": triplet_counts,
        "held_out_products": sorted(held_out),
        "validation_products": sorted(set(labels[validation])),
        "config": asdict(config),
        "metrics": trained.metrics(),
        "best_epoch": trained.best_epoch,
        "evaluation": {
            "held_out_triplet_accuracy": {
                "unsupervised": fit.unsupervised_accuracy,
                "supervised": fit.supervised_accuracy,
            },
            "validation": {
                "stopped_on": config.stop_on,
                "unsupervised": trained.unsupervised_accuracy,
                "supervised": trained.best_accuracy,
            },
            "held_out_map_at_10": {
                "unsupervised": unsupervised_map,
                "supervised": supervised_map,
            },
        },
    }
    store.put_bytes(
        prefix + "loss-curves.png", _curves_png(trained.history, trained.unsupervised_accuracy)
    )
    store.put_bytes(prefix + "weights.pt", weights)
    store.put_bytes(prefix + "metadata.json", json.dumps(metadata, indent=1).encode())
    store.publish_pointer(SIMILARITY_CURRENT, version)
    return SimilarityRun(
        version=version,
        train_products=len(set(labels[~split & ~validation])),
        test_products=len(held_out),
        test_triplets=len(test_triplets),
        annotated_triplets=triplet_counts,
        unsupervised_accuracy=fit.unsupervised_accuracy,
        supervised_accuracy=fit.supervised_accuracy,
        unsupervised_map10=unsupervised_map,
        supervised_map10=supervised_map,
        best_epoch=trained.best_epoch,
        epochs=len(trained.history),
        metrics=trained.metrics(),
        model_uri=store.uri(prefix),
        validation_products=len(set(labels[validation])),
    )


def load_projection(store: Store, encoder_version: str, version: str | None = None):
    """(net, metadata) of the current (or a named) similarity model; refuses one trained on
    another encoder version."""
    version = version or store.read_pointer(SIMILARITY_CURRENT)
    if version is None:
        raise InputError("no similarity model yet: run `tiefvision train-triplets` first")
    metadata = json.loads(store.get_bytes(f"{SIMILARITY_PREFIX}{version}/metadata.json"))
    if metadata["encoder_version"] != encoder_version:
        raise IncompatibleModel(
            f"similarity model {version} was trained on {metadata['encoder_version']}, "
            f"but {encoder_version} was requested; retrain with `tiefvision train-triplets`"
        )
    # Models saved before the deeper head have no "head": the seed's 1×1 projection.
    net = ProjectionNet(metadata["channels"], int(metadata.get("head", {}).get("hidden", 0)))
    state = torch.load(
        io.BytesIO(store.get_bytes(f"{SIMILARITY_PREFIX}{version}/weights.pt")), weights_only=True
    )
    net.load_state_dict(state)
    net.eval()
    return net, metadata
