"""Similarity search: build a space's vectors from stored encodings, and query it by image id
or by a photo (locate → crop → encode → search).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tiefvision_core.catalog.imaging import decode_image
from tiefvision_core.catalog.ingest import read_manifest
from tiefvision_core.errors import IncompatibleModel, InputError
from tiefvision_core.index.vectors import IndexConfig
from tiefvision_core.index.versions import IndexVersion, OpenedIndex, publish_index
from tiefvision_core.similarity.unsupervised import similarity_grid, similarity_vectors
from tiefvision_core.storage.stores import Store

if TYPE_CHECKING:  # torch comes with these: a search by id must not pay its import (~2 s cold)
    from tiefvision_core.encoders import Encoder
    from tiefvision_core.encoding.shards import RowKey

__all__ = [
    "QUERY_SCALES",
    "SearchHit",
    "SearchResult",
    "catalog_rows",
    "query_box",
    "query_scales",
    "rebuild_space",
    "search_by_id",
    "search_by_image",
    "space_source",
    "space_transform",
    "space_vectors",
]

_ID_COLUMNS = ["image_id", "sha256", "box"]
_METADATA_COLUMNS = ("product_id", "category")


@dataclass(frozen=True)
class SearchHit:
    image_id: str
    score: float
    box: list[int]


@dataclass(frozen=True)
class SearchResult:
    space: str
    index_version: str
    results: list[SearchHit]
    query_box: list[int] | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        data = {
            "index_version": self.index_version,
            "space": self.space,
            "results": [asdict(hit) for hit in self.results],
        }
        if self.query_box is not None:
            data["query_box"] = self.query_box
        return data


def catalog_rows(
    store: Store,
    encoder: Encoder,
    *,
    vectors: bool = True,
    only: Collection[RowKey] | None = None,
) -> pa.Table:
    """The current box-crop encodings (no mirrors) of the catalog, one row per photo.

    ``vectors=False`` reads the keys (image_id, sha256, box) alone; ``only`` reads the rows
    of these keys alone (see :func:`read_encodings`)."""
    from tiefvision_core.encoding.shards import read_encodings

    extra = ["vector", "grid_h", "grid_w", "channels"] if vectors else []
    table = read_encodings(
        store,
        encoder.name,
        encoder.version,
        kind="box",
        columns=[*_ID_COLUMNS, *extra],
        only=only,
    )
    if table.num_rows == 0:
        if only is not None:
            return table
        raise InputError(
            "no box-crop encodings for this encoder yet: run `tiefvision rebuild-index`, "
            "which encodes them first"
        )
    table = table.filter(pc.invert(table["flipped"]))
    # One row per photo (its current bytes and box), whichever runs wrote it: an index must
    # not hold a photo twice.
    first: dict[tuple, int] = {}
    for row, key in enumerate(
        zip(table["image_id"].to_pylist(), table["sha256"].to_pylist(), strict=True)
    ):
        first.setdefault(key, row)
    if len(first) < table.num_rows:
        table = table.take(pa.array(sorted(first.values()), pa.int64()))
    return table


def _chunks(table: pa.Table, size: int = 512) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, size):
        yield table.slice(start, size)


def space_vectors(
    table: pa.Table, transform: Callable[[np.ndarray], np.ndarray] | None = None
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Flat mean-cosine vectors (float16) of every row on the similarity grid, computed
    chunk by chunk, after ``transform`` of the maps (the supervised projection) when given.
    Returns them with the grid (H, W, C) they were measured on."""
    from tiefvision_core.encoding.shards import vectors_as_maps

    out, grid = None, (0, 0, 0)
    done = 0
    for part in _chunks(table):
        maps = similarity_grid(vectors_as_maps(part))
        maps = transform(maps) if transform else maps
        if out is None:
            grid = (maps.shape[2], maps.shape[3], maps.shape[1])
            out = np.empty((table.num_rows, int(np.prod(grid))), np.float16)
        vectors = similarity_vectors(maps)
        out[done : done + len(vectors)] = vectors
        done += len(vectors)
    assert out is not None, "catalog_rows never returns an empty table"
    return out, grid


def id_frame(store: Store, table: pa.Table) -> pd.DataFrame:
    """Row → image_id, sha256, box, and the manifest's product_id/category when present
    (category is a search filter; product_id is the evaluation's ground truth)."""
    frame = table.select(_ID_COLUMNS).to_pandas()
    frame["box"] = frame["box"].map(lambda b: [int(v) for v in b])
    manifest = read_manifest(store)
    if manifest is not None:
        extra = [c for c in _METADATA_COLUMNS if c in manifest.column_names]
        if extra:
            meta = manifest.select(["image_id", *extra]).to_pandas()
            frame = frame.merge(meta, on="image_id", how="left")
    return frame


def _hits(
    opened: OpenedIndex,
    scores: np.ndarray,
    rows: np.ndarray,
    k: int,
    exclude: str | None,
    where: dict[str, str] | None,
) -> list[SearchHit]:
    hits = []
    image_ids, boxes = opened.column("image_id"), opened.column("box")
    for score, row in zip(scores.tolist(), rows.tolist(), strict=True):
        if row < 0:
            continue
        if exclude is not None and image_ids[row] == exclude:
            continue
        if where and any(str(opened.column(c)[row]) != v for c, v in where.items()):
            continue
        hits.append(SearchHit(image_ids[row], round(score, 6), _ints(boxes[row])))
        if len(hits) == k:
            break
    return hits


def _ints(box: object) -> list[int]:
    return [int(v) for v in box]


def _check_filter(opened: OpenedIndex, where: dict[str, str] | None) -> None:
    for column in where or {}:
        if column not in opened.ids.columns or column in ("box",):
            raise InputError(
                f"cannot filter on {column!r}: the index knows "
                f"{', '.join(c for c in opened.ids.columns if c != 'box')}"
            )


def _search(opened: OpenedIndex, query: np.ndarray, k: int, exclude, where) -> list[SearchHit]:
    _check_filter(opened, where)
    wanted = k + (exclude is not None)
    if where:
        wanted = max(wanted * 10, opened.index.config.rerank)
    # ANN indexes re-rank their ``rerank`` best compact-space candidates (at least
    # ``wanted``) exactly: the recall measured by bench/search.py, not that of the top k+1.
    scores, rows = opened.index.search(query[None, :], wanted)
    return _hits(opened, scores[0], rows[0], k, exclude, where)


def search_by_id(
    opened: OpenedIndex,
    image_id: str,
    *,
    k: int = 10,
    include_self: bool = False,
    where: dict[str, str] | None = None,
) -> SearchResult:
    """Neighbours of a catalog photo, from its stored vector (no encoding needed)."""
    row = opened.row_of(image_id)
    query = np.asarray(opened.index.vectors[row], np.float32)
    hits = _search(opened, query, k, None if include_self else image_id, where)
    return SearchResult(opened.space, opened.version, hits, _ints(opened.column("box")[row]))


#: Locator models by (store, version, encoder version): a version's files never change, so
#: an upload pays for reading CURRENT alone, not for the weights (several store reads, on S3
#: round trips) every time.
_LOCATORS: dict[tuple[str, str, str], object] = {}
_LOCATORS_KEPT = 4


def _current_locator(store: Store, encoder: Encoder):
    from tiefvision_core.locator.store import LOCATOR_CURRENT, load_locator

    version = store.read_pointer(LOCATOR_CURRENT)
    if version is None:
        return None
    key = (store.uri(), version, encoder.version)
    model = _LOCATORS.get(key)
    if model is None:
        try:
            model = load_locator(store, version, encoder_version=encoder.version)
        except IncompatibleModel:
            return None
        if len(_LOCATORS) >= _LOCATORS_KEPT:
            _LOCATORS.clear()
        _LOCATORS[key] = model
    return model


#: The locator's input sides an upload is looked at, of those the model was trained with
#: (a model with none of them is looked at with all of its own). Measured by
#: ``bench/upload_quality.py`` (docs/benchmarks.md): dropping the 320 side keeps mean IoU and
#: mAP@10 within 0.003 of all three scales and cuts locate + encode by ≈ 20 %; dropping
#: 576 instead loses 0.09 IoU.
QUERY_SCALES: tuple[int, ...] = (448, 576)


def query_scales(trained: Sequence[int], wanted: Sequence[int] | None = None) -> tuple[int, ...]:
    """The scales an upload is located at: ``wanted`` (default :data:`QUERY_SCALES`) among
    the ``trained`` ones, in trained order; all trained ones when none of them is wanted."""
    wanted = QUERY_SCALES if wanted is None else tuple(wanted)
    chosen = tuple(side for side in trained if side in wanted)
    return chosen or tuple(trained)


def query_box(
    store: Store, encoder: Encoder, image, *, scales: Sequence[int] | None = None
) -> list[int]:
    """Where the product is in an uploaded photo: the current locator when it was trained
    on this encoder, else the whole photo (never a wrong-space box). ``scales``: see
    :func:`query_scales`."""
    from tiefvision_core.locator.store import locate_image

    model = _current_locator(store, encoder)
    if model is None:
        return [0, 0, image.width, image.height]
    chosen = query_scales(model.scales, scales)
    return _ints(locate_image(model, encoder, image, scales=chosen).box)


def search_by_image(
    store: Store,
    opened: OpenedIndex,
    encoder: Encoder,
    data: bytes,
    *,
    k: int = 10,
    where: dict[str, str] | None = None,
    scales: Sequence[int] | None = None,
) -> SearchResult:
    """Neighbours of an uploaded photo: decoded safely, located (at ``scales`` of the
    locator's, default :data:`QUERY_SCALES`), cropped, encoded on the canonical grid,
    (projected for a supervised space) and searched."""
    from tiefvision_core.encoding.runtime import encode_crops

    source = opened.metadata.get("source", {})
    if source.get("encoder_version") not in (None, encoder.version):
        raise IncompatibleModel(
            f"the {opened.space} index {opened.version} holds {source['encoder_version']} "
            f"vectors, but the query was encoded with {encoder.version}"
        )
    image = decode_image(data)
    box = query_box(store, encoder, image, scales=scales)
    maps = similarity_grid(encode_crops(encoder, [image], [tuple(box)]).cpu().numpy())
    transform = space_transform(store, opened.space, encoder, source.get("model_version"))
    if transform is not None:
        maps = transform(maps)
    query = similarity_vectors(maps)[0]
    return SearchResult(opened.space, opened.version, _search(opened, query, k, None, where), box)


def space_transform(
    store: Store, space: str, encoder: Encoder, model_version: str | None = None
) -> Callable[[np.ndarray], np.ndarray] | None:
    """How a space turns encoder maps into its grid encodings: nothing for the
    unsupervised space, the trained projection for the supervised one."""
    if space != "supervised":
        return None
    from tiefvision_core.similarity.training import load_projection, projected_maps

    net, _ = load_projection(store, encoder.version, model_version)
    return lambda maps: projected_maps(net, maps)


def space_source(store: Store, encoder: Encoder, space: str) -> dict[str, object]:
    """What a space's vectors are computed from, as recorded in an index version: vectors
    of another encoder version or similarity model are not comparable."""
    source: dict[str, object] = {
        "encoder": encoder.name,
        "encoder_version": encoder.version,
        "kind": "box",
    }
    if space == "supervised":
        from tiefvision_core.similarity.training import CURRENT

        source["model_version"] = store.read_pointer(CURRENT)
    return source


def rebuild_space(
    store: Store,
    encoder: Encoder,
    space: str = "unsupervised",
    *,
    config: IndexConfig | None = None,
    keep: int = 3,
) -> IndexVersion:
    """A new version of ``space``'s index from the current box-crop encodings (through the
    current similarity model for the supervised space)."""
    read_at = time.time()  # before any input is read: orders this version among rebuilds
    source = space_source(store, encoder, space)
    transform = space_transform(store, space, encoder, source.get("model_version"))
    table = catalog_rows(store, encoder)
    vectors, grid = space_vectors(table, transform)
    return publish_index(
        store,
        space,
        vectors,
        id_frame(store, table),
        grid=grid,
        source=source,
        config=config,
        keep=keep,
        inputs_read_at=read_at,
    )
