"""Encoding core: crops, normalisation, shards, streaming with bad input, retrieval quality."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from PIL import Image

from tiefvision_core.catalog.imaging import DEFAULT_MAX_PIXELS, decode_image
from tiefvision_core.catalog.ingest import ingest_catalog
from tiefvision_core.catalog.synthetic import generate_catalog, render_view
from tiefvision_core.catalog.synthetic_garments import make_products
from tiefvision_core.encoders import get_encoder
from tiefvision_core.encoding.encode import encode_catalog
from tiefvision_core.encoding.pixels import (
    crop_pixels,
    encode_crops,
    encode_whole,
    l2_normalise_positions,
)
from tiefvision_core.encoding.requests import CropRequest
from tiefvision_core.encoding.runtime import EncodingRuntime, RuntimeConfig
from tiefvision_core.encoding.shards import read_encodings, vectors_as_maps
from tiefvision_core.storage.stores import LocalStore
from tiefvision_core.storage.urls import read_object


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    image, _ = render_view(make_products(1, seed=5)[0], 1, size=(320, 400))
    return image


def test_positions_are_unit_length_after_normalisation() -> None:
    maps = torch.randn(3, 64, 5, 6) * 7
    unit = l2_normalise_positions(maps)
    assert torch.allclose(unit.norm(dim=1), torch.ones(3, 5, 6), atol=1e-5)
    assert torch.allclose(l2_normalise_positions(torch.zeros(1, 4, 2, 2)), torch.zeros(1, 4, 2, 2))


def test_grid_crop_equals_encoding_the_cropped_image(lite0, photo) -> None:
    box = (40, 60, 260, 350)
    via_box = encode_crops(lite0, [photo], [box])
    direct = encode_crops(lite0, [photo.crop(box)], [None])
    assert via_box.shape == (1, 1280, 7, 7)
    torch.testing.assert_close(via_box, direct)


def test_flip_mirrors_the_crop(photo) -> None:
    plain = crop_pixels(photo, None, 224)
    mirrored = crop_pixels(photo, None, 224, flip=True)
    assert torch.equal(mirrored, plain.flip(2))


def test_whole_image_keeps_aspect_on_stride_multiples(lite0, photo) -> None:
    maps, scale = encode_whole(lite0, photo, max_side=512)
    assert scale == pytest.approx(1.0)
    assert maps.shape == (1, 1280, 12, 10)  # 400 → 384 (nearest multiple of 32), 320 → 320


def test_empty_box_is_refused(photo) -> None:
    with pytest.raises(ValueError, match="empty crop box"):
        crop_pixels(photo, (10, 10, 10, 50), 224)


def test_out_of_memory_halves_the_batch(lite0, monkeypatch) -> None:
    """GPU-only condition, reproduced on the CPU: batches above 2 'run out of memory'."""
    runtime = EncodingRuntime(lite0, device="cpu", batch_size=8, workers=0)
    real = runtime._forward_once

    def limited(pixels: torch.Tensor) -> torch.Tensor:
        if len(pixels) > 2:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(pixels)

    monkeypatch.setattr(runtime, "_forward_once", limited)
    pixels = torch.randint(0, 255, (7, 3, 224, 224), dtype=torch.uint8)
    maps = runtime.forward(pixels)
    assert maps.shape == (7, 1280, 7, 7) and runtime.max_forward == 2
    torch.testing.assert_close(maps[:2], real(pixels[:2]))


@pytest.fixture(scope="module")
def encoded_store(tmp_path_factory, lite0):
    root = tmp_path_factory.mktemp("encoded")
    generate_catalog(root / "catalog", products=3, views=2, seed=2)
    store = LocalStore(root / "store")
    ingest_catalog(LocalStore(root / "catalog" / "images", create=False), store)
    runtime = EncodingRuntime(lite0, device="cpu", batch_size=4, workers=1)
    summary = encode_catalog(store, runtime, shard_size=4, flips=True, dtype="float32")
    return store, runtime, summary


def test_shard_rows_and_schema_metadata(encoded_store, lite0) -> None:
    store, _, summary = encoded_store
    assert summary.encoded == 6 and summary.rejected == 0 and summary.shards_written == 2
    table = read_encodings(store, lite0.name, lite0.version)
    assert table.num_rows == 12  # 6 images × (plain, flipped)
    ids = table["image_id"].to_pylist()
    assert all(ids.count(i) == 2 for i in ids)
    assert sorted(table.filter(pc.field("flipped"))["image_id"].to_pylist()) == sorted(set(ids))
    shard_keys = [i.key for i in store.list(f"encodings/{lite0.name}/grid/{lite0.version}/shard-")]
    assert len(shard_keys) == 2 and all(k.endswith(".parquet") for k in shard_keys)
    metadata = store.read_parquet(shard_keys[0]).schema.metadata
    assert json.loads(metadata[b"tiefvision.encoder"])["encoder_version"] == lite0.version
    assert vectors_as_maps(table).shape == (12, 1280, 7, 7)


def test_float16_shards_stay_close_to_float32(encoded_store, lite0, tmp_path) -> None:
    store, runtime, _ = encoded_store
    half_store = LocalStore(tmp_path / "half")
    for info in store.list("catalog/"):
        half_store.put_bytes(info.key, store.get_bytes(info.key))
    encode_catalog(half_store, runtime, shard_size=8, flips=False, dtype="float16")
    half = read_encodings(half_store, lite0.name, lite0.version)
    assert half.schema.field("vector").type.value_type == pa.float16()
    full = read_encodings(store, lite0.name, lite0.version).filter(~pc.field("flipped"))
    order = {image_id: i for i, image_id in enumerate(full["image_id"].to_pylist())}
    rows = [order[i] for i in half["image_id"].to_pylist()]
    np.testing.assert_allclose(
        vectors_as_maps(half), vectors_as_maps(full.take(rows)), rtol=2e-3, atol=2e-3
    )


def test_stream_agrees_with_direct_encoding(encoded_store, lite0) -> None:
    """The stream decodes at reduced size (JPEG draft) for speed; the features must not move.

    Measured as the seed's similarity (mean cosine over positions) between each streamed
    encoding and a direct full-resolution encoding of the same photo.
    """
    store, _, _ = encoded_store
    table = read_encodings(store, lite0.name, lite0.version).filter(~pc.field("flipped"))
    manifest = store.read_parquet(
        "catalog/manifest/" + store.read_pointer("catalog/manifest/CURRENT") + ".parquet"
    )
    uri = dict(
        zip(manifest["image_id"].to_pylist(), manifest["source_uri"].to_pylist(), strict=True)
    )
    images = [
        decode_image(read_object(uri[i]), max_pixels=DEFAULT_MAX_PIXELS)
        for i in table["image_id"].to_pylist()
    ]
    direct = l2_normalise_positions(encode_crops(lite0, images, [None] * len(images)))
    streamed = l2_normalise_positions(torch.from_numpy(vectors_as_maps(table)))
    similarity = (direct.flatten(1) @ streamed.flatten(1).T) / (7 * 7)
    assert similarity.diagonal().min() >= 0.9, similarity.diagonal()
    assert torch.equal(similarity.argmax(dim=1), torch.arange(len(images)))


def test_rerun_encodes_nothing(encoded_store) -> None:
    store, runtime, _ = encoded_store
    again = encode_catalog(store, runtime, shard_size=4, flips=True, dtype="float32")
    assert again.encoded == 0 and again.already_encoded == 6 and again.shards_written == 0


def _precision_at_1(maps: np.ndarray, products: list[str]) -> float:
    unit = l2_normalise_positions(torch.from_numpy(maps)).flatten(1)
    similarity = unit @ unit.T / (maps.shape[2] * maps.shape[3])
    similarity.fill_diagonal_(-np.inf)
    nearest = similarity.argmax(dim=1).tolist()
    return float(np.mean([products[i] == products[j] for i, j in enumerate(nearest)]))


@pytest.mark.slow
def test_pretrained_features_beat_random_on_retrieval(tmp_path, lite0) -> None:
    """Nearest neighbour (mean cosine over positions) is another view of the same product."""
    images = generate_catalog(tmp_path, products=16, views=3, seed=11)
    pictures = [Image.open(tmp_path / "images" / item.path).convert("RGB") for item in images]
    boxes = [item.box for item in images]
    products = [item.product_id for item in images]
    random = get_encoder("efficientnet_lite0", "none")
    scores = {}
    for name, encoder in (("pretrained", lite0), ("random", random)):
        maps = torch.cat(
            [encode_crops(encoder, pictures[i : i + 8], boxes[i : i + 8]) for i in range(0, 48, 8)]
        )
        scores[name] = _precision_at_1(maps.numpy(), products)
    assert scores["pretrained"] >= 0.6, scores
    assert scores["pretrained"] >= scores["random"] + 0.2, scores


def test_cpu_process_pool_encodes_like_the_loader_path(encoded_store, lite0) -> None:
    """The multi-core CPU path (one single-threaded process per core, each decoding and
    encoding whole batches) gives the same rows, in order, as the DataLoader path."""
    store, _, _ = encoded_store
    manifest = store.read_parquet(
        "catalog/manifest/" + store.read_pointer("catalog/manifest/CURRENT") + ".parquet"
    )
    requests = [
        CropRequest(r["image_id"], r["sha256"], r["source_uri"], r["width"], r["height"])
        for r in manifest.to_pylist()
    ]
    requests.append(replace(requests[0], image_id="gone", uri=requests[0].uri + ".missing"))
    config = RuntimeConfig(device="cpu", batch_size=2, cpu_processes=2, pool_min_images=1)
    pooled = config.build()
    try:
        batches = list(pooled.stream(requests, flips=True))
        assert pooled._pool is not None and pooled._pool.processes == 2
    finally:
        pooled.close()
    loader = EncodingRuntime(lite0, device="cpu", batch_size=2, workers=0)
    expected = list(loader.stream(requests, flips=True))
    assert [r.image_id for b in batches for r in b.requests] == [
        r.image_id for b in expected for r in b.requests
    ]
    assert [b.flipped.tolist() for b in batches] == [b.flipped.tolist() for b in expected]
    assert [(r.image_id, why) for b in batches for r, why, _ in b.rejects] == [("gone", "vanished")]
    np.testing.assert_allclose(
        np.concatenate([b.maps for b in batches if len(b.requests)]),
        np.concatenate([b.maps for b in expected if len(b.requests)]),
        rtol=1e-4,
        atol=1e-4,
    )


def test_a_fifo_or_an_oversized_file_swapped_in_after_ingest_is_a_reason_not_a_hang(
    tmp_path,
) -> None:
    """Decoding workers read through ``read_source``: what replaced a photo since ingest is
    a reason for that one photo, never a worker blocked on a FIFO or filling its memory."""
    import hashlib
    import io
    import os

    from tests.guards import finishes_within
    from tiefvision_core.encoding.requests import CropDataset

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "JPEG")
    photo = buffer.getvalue()
    sha = hashlib.sha256(photo).hexdigest()
    paths = {name: tmp_path / f"{name}.jpg" for name in ("same", "fifo", "big", "changed")}
    for path in paths.values():
        path.write_bytes(photo)
    paths["fifo"].unlink()
    os.mkfifo(paths["fifo"])
    paths["big"].write_bytes(photo + bytes(64 * 1024))
    paths["changed"].write_bytes(photo + b"\0")
    requests = [CropRequest(name, sha, path.as_uri(), 64, 48) for name, path in paths.items()]
    dataset = CropDataset(requests, 224, 10_000_000, 32, max_bytes=len(photo) + 1024)
    items = finishes_within(
        30, lambda: [dataset[i] for i in range(len(requests))], fifos=[paths["fifo"]]
    )
    reasons = {requests[i].image_id: why for i, _, why, _ in items}
    assert reasons == {
        "same": "",
        "fifo": "not_a_regular_file",
        "big": "too_large",
        "changed": "changed_since_ingest",
    }


def test_whole_photo_box_crops_are_copied_from_the_grid_encoding(tmp_path, lite0) -> None:
    """Without a located box, a photo's box crop is the whole photo resized to the encoder's
    square: the grid encoding's very input. So ``rebuild-index`` after ``encode`` copies
    those rows instead of encoding every photo a second time, and they equal what encoding
    them would give; grid rows of another vector dtype are not mixed in."""
    generate_catalog(tmp_path / "catalog", products=2, views=2, seed=3)
    source = LocalStore(tmp_path / "catalog" / "images", create=False)
    runtime = EncodingRuntime(lite0, device="cpu", batch_size=4, workers=0)
    stores = {}
    for name in ("copied", "encoded"):
        stores[name] = LocalStore(tmp_path / name)
        ingest_catalog(source, stores[name])
    encode_catalog(stores["copied"], runtime, shard_size=4)
    box = encode_catalog(stores["copied"], runtime, kind="box", shard_size=4)
    assert (box.encoded, box.already_encoded, box.images) == (0, 4, 4)
    direct = encode_catalog(stores["encoded"], runtime, kind="box", shard_size=4)
    assert direct.encoded == 4

    def box_rows(store: LocalStore) -> pa.Table:
        return read_encodings(store, lite0.name, lite0.version, kind="box").sort_by("image_id")

    copied, encoded = box_rows(stores["copied"]), box_rows(stores["encoded"])
    assert copied["image_id"].to_pylist() == encoded["image_id"].to_pylist()
    assert copied["box"].to_pylist() == encoded["box"].to_pylist()
    np.testing.assert_array_equal(vectors_as_maps(copied), vectors_as_maps(encoded))

    mixed = LocalStore(tmp_path / "mixed")
    ingest_catalog(source, mixed)
    encode_catalog(mixed, runtime, shard_size=4, dtype="float32")
    again = encode_catalog(mixed, runtime, kind="box", shard_size=4)
    assert again.encoded == 4  # float32 grid rows are not copied into float16 box shards
