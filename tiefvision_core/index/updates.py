"""Nightly index maintenance: bring a space's live index up to the catalog, cheaply.

Every version is a complete folder published through :func:`publish_index` — the same
self-check, atomic ``CURRENT`` switch and pruning as a rebuild. What an update saves is
what costs: rows whose (image_id, sha256, box) did not change keep the vectors the live
version stored (no encoding read, no projection), only new and changed photos' encodings
are read and turned into vectors, removed photos are dropped, and the FAISS index reuses
the live version's training (see :func:`update_index`).

Whether an update is good enough is decided by :func:`decide_update`, a pure function of
the live version's metadata and the size of the change:

* **rebuild, vectors recomputed** — the encoder version or the similarity model changed:
  the stored vectors live in another space;
* **rebuild, vectors reused** — the index configuration changed, the catalog's size moved
  ``auto`` to another kind (exact ↔ HNSW), or an ANN index's training (the compact
  projection; IVF centroids and PQ codebooks) no longer represents the data: more rows
  added, changed or removed since it was trained than ``max_churn`` of the rows it saw, or
  the catalog grew or shrank by more than ``max_growth`` times;
* **unchanged** — nothing was added, changed or removed and no metadata moved: the live
  version stays, nothing is written;
* **update** — otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from tiefvision_core.catalog.snapshot import CatalogSnapshot, catalog_snapshot
from tiefvision_core.encoders import Encoder
from tiefvision_core.encoding.shards import RowKey, row_key, row_keys
from tiefvision_core.index.gate import DEFAULT_GATE, GatePolicy, regression_gate
from tiefvision_core.index.spaces import (
    catalog_rows,
    id_frame,
    space_source,
    space_transform,
    space_vectors,
)
from tiefvision_core.storage.layout import current_key
from tiefvision_core.storage.stores import Store
from tiefvision_core.vector_index.kinds import IndexKindChoice
from tiefvision_core.vector_index.publish import publish_index
from tiefvision_core.vector_index.vectors import BuiltIndex, IndexConfig, update_index
from tiefvision_core.vector_index.versions import open_index, space_prefix

__all__ = [
    "Decision",
    "IndexDelta",
    "IndexUpdate",
    "LiveIndex",
    "RowDiff",
    "UpdatePolicy",
    "decide_update",
    "diff_rows",
    "update_space",
]

Action = Literal["unchanged", "update", "rebuild"]


@dataclass(frozen=True)
class UpdatePolicy:
    """When an ANN index's training is too old to keep (exact indexes have none)."""

    max_churn: float = 0.2  # rows added/changed/removed since training ÷ rows trained on
    max_growth: float = 2.0  # catalog size ÷ size at training (or its inverse)

    def __post_init__(self) -> None:
        if self.max_churn <= 0 or self.max_growth <= 1:
            raise ValueError("max_churn must be > 0 and max_growth > 1")


@dataclass(frozen=True)
class LiveIndex:
    """What the decision needs to know about the live version (its metadata.json)."""

    version: str
    kind: str
    size: int
    dimension: int
    source: Mapping[str, object]
    config: IndexConfig
    trained_rows: int  # rows the ANN training (or the first build) saw
    churn: int  # rows added, changed or removed since then

    @classmethod
    def from_metadata(cls, version: str, metadata: Mapping[str, Any]) -> LiveIndex:  # JSON
        # Versions published before updates existed were all fresh builds.
        training = metadata.get("training") or {"rows": metadata["size"], "churn": 0}
        return cls(
            version=version,
            kind=str(metadata["kind"]),
            size=int(metadata["size"]),
            dimension=int(metadata["dimension"]),
            source=dict(metadata.get("source") or {}),
            config=IndexConfig(**metadata["config"]),
            trained_rows=int(training["rows"]),
            churn=int(training["churn"]),
        )


@dataclass(frozen=True)
class IndexDelta:
    """The catalog's box crops against the live version's rows."""

    kept: int
    new: int  # photos the live version does not hold
    changed: int  # photos it holds with other bytes or another box
    removed: int  # photos it holds that are no longer in the catalog
    metadata_changed: bool = False  # product_id/category of a kept row moved

    @property
    def size(self) -> int:
        return self.kept + self.new + self.changed

    @property
    def touched(self) -> int:
        return self.new + self.changed + self.removed


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    reuse_vectors: bool  # the live version's stored vectors are valid for this space


def decide_update(
    live: LiveIndex | None,
    delta: IndexDelta,
    source: Mapping[str, object],
    config: IndexConfig,
    policy: UpdatePolicy | None = None,
) -> Decision:
    """Update in place, rebuild, or leave the live version alone — and why (see the module
    docstring for the rules). ``source`` and ``config`` are what the new version must have."""
    policy = policy or UpdatePolicy()
    if live is None:
        return Decision("rebuild", "no live index yet: first build", False)
    for name, what in (("encoder_version", "encoder"), ("model_version", "similarity model")):
        old, new = live.source.get(name), source.get(name)
        if old != new:
            return Decision(
                "rebuild",
                f"{what} changed ({old} → {new}): the stored vectors are in another space",
                False,
            )
    if config != live.config:
        return Decision("rebuild", "index configuration changed", True)
    kind = config.choose(delta.size, live.dimension)
    if kind != live.kind:
        return Decision(
            "rebuild", f"{delta.size} rows: {config.kind} now picks {kind}, not {live.kind}", True
        )
    if delta.touched == 0 and not delta.metadata_changed:
        return Decision("unchanged", "no photo added, changed or removed", True)
    if kind == "exact":
        return Decision("update", "exact index: reused vectors + new ones, copied flat", True)
    trained = max(1, live.trained_rows)
    growth = delta.size / trained
    if growth > policy.max_growth or growth < 1 / policy.max_growth:
        return Decision(
            "rebuild",
            f"catalog is {growth:.2f}× the {trained} rows the {kind} training saw "
            f"(limit {policy.max_growth:g}× either way)",
            True,
        )
    churn = (live.churn + delta.touched) / trained
    if churn > policy.max_churn:
        return Decision(
            "rebuild",
            f"{churn:.0%} of the {trained} rows the {kind} training saw were added, changed "
            f"or removed since (limit {policy.max_churn:.0%})",
            True,
        )
    how = "graph relinked" if kind == "hnsw" else "removed/added in the trained lists"
    return Decision("update", f"{kind}: training reused ({churn:.0%} churn since it), {how}", True)


@dataclass(frozen=True)
class RowDiff:
    """How the next version's rows derive from the live one's: ``kept_rows`` (old row
    numbers, ascending) first, then ``added`` (sorted by image id)."""

    kept_rows: np.ndarray
    kept: list[RowKey]
    added: list[RowKey]
    delta: IndexDelta


def diff_rows(old: Sequence[RowKey], current: Sequence[RowKey]) -> RowDiff:
    """Compare the live version's rows with the catalog's current box crops by (image_id,
    sha256, box): equal keys keep their stored vector."""
    now = set(current)
    kept_rows = np.array([row for row, key in enumerate(old) if key in now], np.int64)
    kept = [old[row] for row in kept_rows]
    have = set(kept)
    added = sorted((key for key in now if key not in have), key=lambda key: key[0])
    old_ids = {key[0] for key in old}
    current_ids = {key[0] for key in now}
    changed = sum(key[0] in old_ids for key in added)
    delta = IndexDelta(
        kept=len(kept),
        new=len(added) - changed,
        changed=changed,
        removed=len(old_ids - current_ids),
    )
    return RowDiff(kept_rows, kept, added, delta)


@dataclass(frozen=True)
class IndexUpdate:
    """What one space's maintenance did (the run summary's row for it)."""

    space: str
    action: Action
    reason: str
    before: str | None
    after: str | None
    kind: str
    size: int
    kept: int
    new: int
    changed: int
    removed: int
    vectors_computed: int  # rows whose vectors came from encodings in this run
    seconds: float
    self_check: dict[str, object] = field(default_factory=dict)
    gate: dict[str, object] | None = None  # the regression gate's comparison (IndexVersion.gate)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class _RowView:
    """Rows ``rows`` of a (memory-mapped) array, read slice by slice: reused vectors are
    copied into the new version without loading them all at once."""

    def __init__(self, array: np.ndarray, rows: np.ndarray) -> None:
        self.array, self.rows = array, rows
        self.shape = (len(rows), array.shape[1])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, part: slice) -> np.ndarray:
        return np.asarray(self.array[self.rows[part]])


def _keys_table(keys: Sequence[RowKey]) -> pa.Table:
    return pa.table(
        {
            "image_id": [key[0] for key in keys],
            "sha256": [key[1] for key in keys],
            "box": pa.array([list(key[2]) for key in keys], pa.list_(pa.int32(), 4)),
        }
    )


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells as comparable text: a box read back from Parquet is an ndarray of numpy ints,
    one built from row keys a list of ints — equal boxes must compare equal."""

    def text(value: object) -> str:
        if isinstance(value, list | tuple | np.ndarray):
            return str(np.asarray(value).tolist())
        return str(value)

    return frame.map(text)


def _same_frame(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return list(a.columns) == list(b.columns) and _cells(a).equals(_cells(b))


def update_space(
    store: Store,
    encoder: Encoder,
    space: str,
    *,
    index_kind: IndexKindChoice | None = None,
    policy: UpdatePolicy | None = None,
    keep: int = 3,
    catalog: CatalogSnapshot | None = None,
    gate: GatePolicy | None = DEFAULT_GATE,
) -> IndexUpdate:
    """Bring ``space``'s index up to the catalog's current box-crop encodings: decide
    (:func:`decide_update`), then publish a new version built from reused and new vectors —
    or leave the live one when nothing changed. ``index_kind`` forces a kind (default: the
    live version's configuration; ``auto`` for a first build). ``catalog``: the run's
    snapshot of the catalog (else the current one, read once for every step below). ``gate``: the
    regression gate's policy, as for :func:`~tiefvision_core.index.spaces.rebuild_space`."""
    started, read_at = time.perf_counter(), time.time()  # read_at: before any input is read
    catalog = catalog_snapshot(store, catalog)
    before = store.read_pointer(current_key(space_prefix(space)))
    opened = open_index(store, space, before) if before else None
    live = LiveIndex.from_metadata(opened.version, opened.metadata) if opened else None
    source = space_source(store, encoder, space)
    if index_kind is not None:
        config = IndexConfig(kind=index_kind)
    else:
        config = live.config if live else IndexConfig()
    old_keys = (
        []
        if opened is None
        else [
            row_key(i, s, b)
            for i, s, b in zip(
                opened.ids["image_id"], opened.ids["sha256"], opened.ids["box"], strict=True
            )
        ]
    )
    diff = diff_rows(
        old_keys, row_keys(catalog_rows(store, encoder, catalog=catalog, vectors=False))
    )
    ids = id_frame(store, _keys_table(diff.kept + diff.added), catalog=catalog)
    delta = diff.delta
    if opened is not None and delta.touched == 0:
        moved = not _same_frame(ids, opened.ids.reset_index(drop=True))
        delta = IndexDelta(delta.kept, 0, 0, 0, metadata_changed=moved)
    decision = decide_update(live, delta, source, config, policy)

    def result(
        after: str | None,
        kind: str,
        size: int,
        computed: int,
        check: dict,
        verdict: dict[str, object] | None = None,
    ) -> IndexUpdate:
        return IndexUpdate(
            space=space,
            action=decision.action,
            reason=decision.reason,
            before=before,
            after=after,
            kind=kind,
            size=size,
            kept=delta.kept,
            new=delta.new,
            changed=delta.changed,
            removed=delta.removed,
            vectors_computed=computed,
            seconds=round(time.perf_counter() - started, 3),
            self_check=check,
            gate=verdict,
        )

    if decision.action == "unchanged":
        assert live is not None
        return result(before, live.kind, live.size, 0, {})
    transform = space_transform(store, space, encoder, source)
    if decision.reuse_vectors:
        assert opened is not None
        grid = tuple(opened.metadata["grid"])
        blocks: list = [_RowView(opened.index.vectors, diff.kept_rows)]
        if diff.added:
            table = catalog_rows(store, encoder, catalog=catalog, only=diff.added)
            if row_keys(table) != diff.added:
                raise RuntimeError("box-crop encodings changed while the index was updated")
            fresh, fresh_grid = space_vectors(table, transform)
            if fresh_grid != grid:
                raise ValueError(f"new vectors on grid {fresh_grid}, the live index on {grid}")
            blocks.append(fresh)
        computed = len(diff.added)
    else:
        table = catalog_rows(store, encoder, catalog=catalog)
        vectors, grid = space_vectors(table, transform)
        blocks, ids, computed = [vectors], id_frame(store, table, catalog=catalog), table.num_rows
    build, training = None, None
    if decision.action == "update":
        assert opened is not None and live is not None
        previous, kept_rows = opened.index, diff.kept_rows

        def build(stored: np.ndarray) -> BuiltIndex:
            return update_index(previous, stored, kept_rows)

        training = {"rows": live.trained_rows, "churn": live.churn + delta.touched}
    version = publish_index(
        store,
        space,
        blocks,
        ids,
        grid=grid,
        source=source,
        config=config,
        keep=keep,
        build=build,
        training=training,
        inputs_read_at=read_at,
        gate=None if gate is None else regression_gate(store, space, gate),
    )
    return result(
        version.version, version.kind, version.size, computed, version.self_check, version.gate
    )
