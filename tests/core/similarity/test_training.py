"""``fit_similarity`` / ``load_projection`` (one Deep Ranking run and the models it saves) on
a tiny real catalog: box crops of 8 products × 2 views encoded once per module, then each
test trains on its own copy of that store."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tiefvision_core.catalog.ingest import ingest_catalog
from tiefvision_core.catalog.manifest import image_id_for
from tiefvision_core.catalog.synthetic import generate_catalog
from tiefvision_core.encoding.encode import encode_catalog
from tiefvision_core.encoding.runtime import EncodingRuntime
from tiefvision_core.encoding.shards import read_encodings, vectors_as_maps
from tiefvision_core.errors import IncompatibleModel, InputError
from tiefvision_core.similarity.deep_ranking import DeepRankingConfig, EpochReport
from tiefvision_core.similarity.training import fit_similarity, load_projection, projected_maps
from tiefvision_core.similarity.triplets import split_products, validation_split
from tiefvision_core.similarity.unsupervised import similarity_grid
from tiefvision_core.storage.stores import LocalStore

PRODUCTS, VIEWS = 8, 2
CURRENT = "models/similarity/CURRENT"
FAST = DeepRankingConfig(max_epochs=4, patience=2, batch_size=8, mined_negatives=3, seed=0)


def _encoded_store(root: Path, lite0, *, products: int, metadata: bool) -> Path:
    generate_catalog(root / "catalog", products=products, views=VIEWS, seed=4, size=(96, 120))
    store = LocalStore(root / "store")
    ingest_catalog(
        LocalStore(root / "catalog" / "images", create=False),
        store,
        metadata=root / "catalog" / "products.csv" if metadata else None,
    )
    runtime = EncodingRuntime(lite0, device="cpu", batch_size=4, workers=0)
    encode_catalog(store, runtime, kind="box", flips=True, dtype="float32")
    return root / "store"


@pytest.fixture(scope="module")
def encoded(lite0, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _encoded_store(tmp_path_factory.mktemp("sim"), lite0, products=PRODUCTS, metadata=True)


@pytest.fixture
def store(encoded: Path, tmp_path: Path) -> LocalStore:
    """This test's own copy of the encoded store (runs write models and pointers)."""
    shutil.copytree(encoded, tmp_path / "store")
    return LocalStore(tmp_path / "store")


def _maps(store: LocalStore, lite0) -> np.ndarray:
    table = read_encodings(store, lite0.name, lite0.version, kind="box")
    return similarity_grid(vectors_as_maps(table.filter(~np.asarray(table["flipped"]))))


def test_a_run_writes_its_version_then_switches_current(store: LocalStore, lite0) -> None:
    epochs: list[EpochReport] = []
    run = fit_similarity(store, lite0, config=FAST, on_epoch=epochs.append)
    prefix = f"models/similarity/{run.version}/"
    for name in ("weights.pt", "metadata.json", "loss-curves.png"):
        assert store.exists(prefix + name), name
    assert store.read_pointer(CURRENT) == run.version
    assert run.model_uri == store.uri(prefix)

    metadata = json.loads(store.get_bytes(prefix + "metadata.json"))
    assert metadata["encoder_version"] == lite0.version and metadata["config"] == asdict(FAST)
    assert set(metadata["held_out_products"]) == split_products(_ids(), 0.25, FAST.seed)
    assert len(metadata["held_out_products"]) == run.test_products
    assert len(metadata["validation_products"]) == run.validation_products == 2
    assert not set(metadata["validation_products"]) & set(metadata["held_out_products"])
    assert run.train_products + run.validation_products + run.test_products == PRODUCTS
    assert run.epochs == len(epochs) == len(metadata["metrics"]) <= FAST.max_epochs
    assert metadata["evaluation"]["held_out_triplet_accuracy"] == {
        "unsupervised": run.unsupervised_accuracy,
        "supervised": run.supervised_accuracy,
    }
    # The kept epoch is never worse on the stopping set than the identity it started from.
    validation = metadata["evaluation"]["validation"]
    assert validation["supervised"] >= validation["unsupervised"]

    _, loaded = load_projection(store, lite0.version)
    assert loaded["version"] == run.version and loaded["channels"] == metadata["channels"]


def test_no_improvement_stops_after_patience_and_keeps_the_identity(
    store: LocalStore, lite0
) -> None:
    # A zero learning rate leaves the weights as initialised: no epoch beats the identity,
    # so the run must stop `patience` epochs in and save the identity (best epoch 0).
    config = replace(FAST, max_epochs=30, patience=3, learning_rate=0.0)
    run = fit_similarity(store, lite0, config=config)
    assert (run.best_epoch, run.epochs) == (0, config.patience)
    assert run.supervised_accuracy == run.unsupervised_accuracy
    net, _ = load_projection(store, lite0.version)
    maps = _maps(store, lite0)
    np.testing.assert_allclose(projected_maps(net, maps), maps, atol=1e-5)


def test_a_later_run_moves_current_and_an_older_one_stays_loadable(
    store: LocalStore, lite0
) -> None:
    first = fit_similarity(store, lite0, config=FAST)
    second = fit_similarity(store, lite0, config=replace(FAST, seed=1))
    assert first.version != second.version
    assert store.read_pointer(CURRENT) == second.version
    assert load_projection(store, lite0.version)[1]["version"] == second.version
    assert load_projection(store, lite0.version, first.version)[1]["version"] == first.version


def test_a_model_of_another_encoder_version_is_refused(store: LocalStore, lite0) -> None:
    with pytest.raises(InputError, match="run `tiefvision train-triplets` first"):
        load_projection(store, lite0.version)
    run = fit_similarity(store, lite0, config=FAST)
    with pytest.raises(IncompatibleModel, match="retrain with `tiefvision train-triplets`"):
        load_projection(store, "efficientnet_lite0-other")
    assert store.read_pointer(CURRENT) == run.version


def test_annotated_triplets_join_one_side_of_the_split_or_are_dropped(
    store: LocalStore, lite0
) -> None:
    test = ["p0000", "p0001"]  # the scored products, fixed from outside
    ids = {p: [image_id_for(f"{p}/view-{v}.jpg") for v in range(1, VIEWS + 1)] for p in _ids()}
    labels = np.array(_ids())
    validation = sorted(labels[validation_split(labels, np.isin(labels, test), FAST)])
    train = [p for p in ids if p not in test and p not in validation]
    triplets = pd.DataFrame(
        [
            (ids[train[0]][0], ids[train[0]][1], ids[train[1]][0]),  # all in training
            (ids[test[0]][0], ids[test[0]][1], ids[test[1]][0]),  # all held out
            (ids[validation[0]][0], ids[validation[0]][1], ids[validation[1]][0]),
            (ids[train[0]][0], ids[train[0]][1], ids[test[0]][0]),  # across the split
            (ids[train[0]][0], ids[train[0]][1], ids[validation[0]][0]),  # across too
            ("no-such-photo", ids[train[0]][1], ids[train[1]][0]),  # not in the catalog
        ],
        columns=["reference", "positive", "negative"],
    )
    run = fit_similarity(store, lite0, triplets=triplets, config=FAST, test_products=test)
    metadata = json.loads(store.get_bytes(f"models/similarity/{run.version}/metadata.json"))
    assert metadata["held_out_products"] == test
    assert metadata["validation_products"] == validation
    assert run.annotated_triplets["annotated_train"] == 1
    assert run.annotated_triplets["annotated_validation"] == 1
    assert run.annotated_triplets["annotated_test"] == 1
    assert run.annotated_triplets["annotated_dropped"] == 3
    # The held-out one is scored with the mined ones.
    assert run.test_triplets == run.annotated_triplets["test"]


def _ids() -> list[str]:
    return [f"p{i:04d}" for i in range(PRODUCTS)]


def test_too_few_products_on_a_side_is_refused_before_anything_is_written(
    store: LocalStore, lite0
) -> None:
    # 8 products, 90 % held out: one product left to train on.
    with pytest.raises(InputError, match="at least 2 products on each side"):
        fit_similarity(store, lite0, config=replace(FAST, test_fraction=0.9))
    assert store.read_pointer(CURRENT) is None


def test_no_encodings_or_no_product_ids_say_what_to_do(lite0, tmp_path: Path) -> None:
    empty = LocalStore(tmp_path / "empty")
    with pytest.raises(InputError, match="tiefvision rebuild-index"):
        fit_similarity(empty, lite0, config=FAST)
    unlabelled = LocalStore(_encoded_store(tmp_path, lite0, products=4, metadata=False))
    with pytest.raises(InputError, match="product_id column"):
        fit_similarity(unlabelled, lite0, config=FAST)
    assert unlabelled.read_pointer(CURRENT) is None


@pytest.mark.parametrize("hidden", [None, 0, 6])
def test_models_load_with_their_head_and_those_saved_before_heads_too(
    tmp_path: Path, hidden: int | None
) -> None:
    """A model saved before the deeper head (metadata without "head", conv.* weights) loads
    as the seed's 1×1 projection; one with a head loads with its branch and projects."""
    import io

    import torch

    from tiefvision_core.similarity.deep_ranking import ProjectionNet

    store = LocalStore(tmp_path / "store")
    net = ProjectionNet(4, hidden or 0)
    with torch.no_grad():
        for value in net.state_dict().values():
            value.add_(0.1)  # not the identity: the loaded weights must be these
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    metadata: dict[str, object] = {"version": "v1", "encoder_version": "enc", "channels": 4}
    if hidden is not None:
        metadata["head"] = {"hidden": hidden}
    store.put_bytes("models/similarity/v1/weights.pt", buffer.getvalue())
    store.put_bytes("models/similarity/v1/metadata.json", json.dumps(metadata).encode())
    loaded, _ = load_projection(store, "enc", "v1")
    assert loaded.hidden == (hidden or 0)
    maps = np.random.default_rng(0).normal(size=(3, 4, 3, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(maps)).numpy()
    np.testing.assert_allclose(projected_maps(loaded, maps), expected, atol=1e-6)


def test_encodings_read_a_block_at_a_time_match_one_read(store: LocalStore, lite0) -> None:
    """Training reads the box encodings a few photos at a time (memory bounded by the
    block), keeps them float16 on the grid, mirrors in the same order as the photos."""
    from tiefvision_core.similarity.training import _encodings

    ids, maps, flipped = _encodings(store, lite0, block=3)
    assert maps.dtype == np.float16 and flipped is not None and flipped.shape == maps.shape
    one_ids, one_maps, one_flipped = _encodings(store, lite0, block=10_000)
    assert ids == one_ids
    np.testing.assert_array_equal(maps, one_maps)
    assert one_flipped is not None
    np.testing.assert_array_equal(flipped, one_flipped)
    np.testing.assert_allclose(maps, _maps(store, lite0), atol=2e-3, rtol=2e-3)
    assert not np.allclose(flipped.astype(np.float32), maps.astype(np.float32), atol=1e-2)


def test_a_run_reads_its_catalog_once_for_encodings_and_product_ids(
    store: LocalStore, lite0, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's snapshot (``catalog=``) is the one manifest the encodings are filtered by
    and the product ids are read from: no second read that an ingest meanwhile could make
    disagree with the first."""
    from tiefvision_core.catalog.snapshot import CatalogSnapshot
    from tiefvision_core.storage import layout

    reads: list[str] = []
    original = LocalStore.read_parquet

    def counted(self: LocalStore, key: str, *args: object, **kwargs: object):
        if key.startswith(layout.MANIFEST_PREFIX):
            reads.append(key)
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "read_parquet", counted)
    catalog = CatalogSnapshot.current(store)
    run = fit_similarity(store, lite0, config=replace(FAST, max_epochs=1), catalog=catalog)
    assert run.version and len(reads) == 1
