"""A search space's vectors from the stored box-crop encodings, and a new index version of
them: what ``rebuild-index`` and the nightly update compute.

The run's catalog snapshot is passed on (``catalog=``): the encodings' filter, the current
boxes and the id frame's metadata all come from its one manifest read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tiefvision_core.catalog.snapshot import CatalogSnapshot, catalog_snapshot
from tiefvision_core.encoders import Encoder
from tiefvision_core.encoding.shards import RowKey, read_encodings, vectors_as_maps
from tiefvision_core.errors import InputError
from tiefvision_core.index.gate import DEFAULT_GATE, GatePolicy, regression_gate
from tiefvision_core.index.models import similarity_projection
from tiefvision_core.similarity.training import projected_maps
from tiefvision_core.similarity.unsupervised import similarity_grid, similarity_vectors
from tiefvision_core.storage.layout import SIMILARITY_CURRENT
from tiefvision_core.storage.stores import Store
from tiefvision_core.vector_index.publish import IndexVersion, publish_index
from tiefvision_core.vector_index.vectors import IndexConfig

__all__ = [
    "catalog_rows",
    "id_frame",
    "rebuild_space",
    "space_source",
    "space_transform",
    "space_vectors",
]

_ID_COLUMNS = ["image_id", "sha256", "box"]
_METADATA_COLUMNS = ("product_id", "category")


def catalog_rows(
    store: Store,
    encoder: Encoder,
    *,
    vectors: bool = True,
    only: Collection[RowKey] | None = None,
    catalog: CatalogSnapshot | None = None,
) -> pa.Table:
    """The current box-crop encodings (no mirrors) of the catalog, one row per photo.

    ``vectors=False`` reads the keys (image_id, sha256, box) alone; ``only`` reads the rows
    of these keys alone (see :func:`read_encodings`); ``catalog``: the run's snapshot of
    the catalog."""
    extra = ["vector", "grid_h", "grid_w", "channels"] if vectors else []
    table = read_encodings(
        store,
        encoder.name,
        encoder.version,
        kind="box",
        columns=[*_ID_COLUMNS, *extra],
        only=only,
        catalog=catalog,
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


def id_frame(
    store: Store, table: pa.Table, *, catalog: CatalogSnapshot | None = None
) -> pd.DataFrame:
    """Row → image_id, sha256, box, and the manifest's product_id/category when present
    (category is a search filter; product_id is the evaluation's ground truth).
    ``catalog``: the run's snapshot of the catalog."""
    frame = table.select(_ID_COLUMNS).to_pandas()
    frame["box"] = frame["box"].map(lambda b: [int(v) for v in b])
    manifest = catalog_snapshot(store, catalog).manifest
    if manifest is not None:
        extra = [c for c in _METADATA_COLUMNS if c in manifest.column_names]
        if extra:
            meta = manifest.select(["image_id", *extra]).to_pandas()
            frame = frame.merge(meta, on="image_id", how="left")
    return frame


def space_transform(
    store: Store, space: str, encoder: Encoder, source: Mapping[str, object] | None = None
) -> Callable[[np.ndarray], np.ndarray] | None:
    """How a space turns encoder maps into its grid encodings: nothing for the
    unsupervised space, the trained projection for the supervised one: the model that
    ``source`` (:func:`space_source`, or an index version's) records, else the current one.
    The projection is read once per version (:mod:`tiefvision_core.index.models`): a search
    by photo in the supervised space does not reload it per upload."""
    if space != "supervised":
        return None
    recorded = (source or {}).get("model_version")
    model_version = None if recorded is None else str(recorded)
    net = similarity_projection(store, encoder, model_version)
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
        source["model_version"] = store.read_pointer(SIMILARITY_CURRENT)
    return source


def rebuild_space(
    store: Store,
    encoder: Encoder,
    space: str = "unsupervised",
    *,
    config: IndexConfig | None = None,
    keep: int = 3,
    catalog: CatalogSnapshot | None = None,
    gate: GatePolicy | None = DEFAULT_GATE,
) -> IndexVersion:
    """A new version of ``space``'s index from the current box-crop encodings (through the
    current similarity model for the supervised space). ``catalog``: the run's snapshot of
    the catalog (else the current one: its manifest read once, for the encodings' filter
    and the ids' metadata).
    ``gate``: the regression gate's policy (None: no gate, the version goes live as soon as
    it passes its self-check); a refused version raises
    :class:`~tiefvision_core.vector_index.pointer.RegressionRefused`."""
    read_at = time.time()  # before any input is read: orders this version among rebuilds
    source = space_source(store, encoder, space)
    transform = space_transform(store, space, encoder, source)
    catalog = catalog_snapshot(store, catalog)
    table = catalog_rows(store, encoder, catalog=catalog)
    vectors, grid = space_vectors(table, transform)
    return publish_index(
        store,
        space,
        vectors,
        id_frame(store, table, catalog=catalog),
        grid=grid,
        source=source,
        config=config,
        keep=keep,
        inputs_read_at=read_at,
        gate=None if gate is None else regression_gate(store, space, gate),
    )
