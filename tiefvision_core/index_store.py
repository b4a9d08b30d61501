"""Versioned indexes on storage: build into a new version, self-check, switch atomically.

Layout (see ``docs/formats.md``)::

    indexes/<space>/<version>/vectors.npy     full vectors (float16), memory-mapped by readers
    indexes/<space>/<version>/index.faiss     exact or ANN index
    indexes/<space>/<version>/projection.npy  compact projection (ANN only)
    indexes/<space>/<version>/ids.parquet     row → image_id, sha256, box, category …
    indexes/<space>/<version>/metadata.json   written last: space, source, kind, grid, config
    indexes/<space>/CURRENT                   the live version, switched after the self-check

A reader opens the version CURRENT names and keeps it open; a rebuild writes a new folder
and only then switches the pointer, so a reader holding the old version keeps working (old
versions are kept, the last ``keep`` of them). On S3 a version is copied to a local cache
once (``~/.cache/tiefvision/indexes``) and memory-mapped from there.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tiefvision_core.errors import InputError
from tiefvision_core.index import BuiltIndex, IndexConfig, VectorIndex, build_index
from tiefvision_core.storage import LocalStore, Store

__all__ = [
    "SPACES",
    "IndexVersion",
    "OpenedIndex",
    "SelfCheckFailed",
    "open_index",
    "publish_index",
]

SPACES = ("unsupervised", "supervised")
_FILES = ("vectors.npy", "index.faiss", "projection.npy", "ids.parquet", "metadata.json")


class SelfCheckFailed(RuntimeError):
    """A freshly built index does not find its own images first: never published."""


def space_prefix(space: str) -> str:
    if space not in SPACES:
        raise InputError(f"unknown space {space!r}: choose one of {', '.join(SPACES)}")
    return f"indexes/{space}/"


@dataclass(frozen=True)
class IndexVersion:
    space: str
    version: str
    kind: str
    size: int
    dimension: int
    build_seconds: float
    self_check: dict[str, object]
    uri: str
    pruned: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _self_check(index: VectorIndex, sample: int = 50) -> dict[str, object]:
    """A sample of the index's own vectors must come back first (a duplicate image with the
    same score counts as found)."""
    rows = np.linspace(0, len(index) - 1, num=min(sample, len(index))).astype(int)
    queries = np.asarray(index.vectors[rows], np.float32)
    scores, found = index.search(queries, 1)
    own = np.einsum("ij,ij->i", queries, queries)
    ok = (found[:, 0] == rows) | (np.abs(scores[:, 0] - own) <= 1e-3)
    return {"queries": len(rows), "found_first": int(ok.sum())}


def publish_index(
    store: Store,
    space: str,
    vectors: np.ndarray | Sequence[np.ndarray],
    ids: pd.DataFrame,
    *,
    grid: tuple[int, int, int],
    source: dict[str, object],
    config: IndexConfig | None = None,
    keep: int = 3,
    build: Callable[[np.ndarray], BuiltIndex] | None = None,
    training: dict[str, int] | None = None,
) -> IndexVersion:
    """Build, self-check, write and switch ``indexes/<space>/CURRENT`` to a new version.

    ``vectors`` (N, D) — or blocks of rows written one after another (reused rows, then
    new ones) — align with ``ids`` (image_id first). ``build`` makes the FAISS index from
    the stored vectors (default: :func:`build_index`, trained afresh; an incremental update
    passes one that reuses the previous version's training). ``training`` records how many
    rows the ANN training saw and how many were added, changed or removed since, which is
    what the next update decides on (default: a fresh build). Nothing is published when the
    self-check fails.
    """
    prefix = space_prefix(space)
    blocks = [vectors] if isinstance(vectors, np.ndarray) else list(vectors)
    rows = sum(len(block) for block in blocks)
    if rows == 0:
        raise InputError(f"nothing to index in space {space}: run `tiefvision encode` first")
    config = config or IndexConfig()
    build = build or (lambda stored: build_index(stored, grid, config))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tiefvision-index-") as tmp:
        folder = Path(tmp)
        shape = (rows, int(blocks[0].shape[1]))
        stored = np.lib.format.open_memmap(
            folder / "vectors.npy", mode="w+", dtype=np.float16, shape=shape
        )
        done = 0
        for block in blocks:
            for start in range(0, len(block), 4096):
                part = block[start : start + 4096]
                stored[done : done + len(part)] = part
                done += len(part)
        stored.flush()
        built = build(stored)
        faiss.write_index(built.index, str(folder / "index.faiss"))
        if built.projection is not None:
            np.save(folder / "projection.npy", built.projection)
        metadata = {
            "space": space,
            "kind": built.kind,
            "grid": list(grid),
            "size": rows,
            "dimension": shape[1],
            "config": asdict(built.config),
            "source": source,
            "training": training or {"rows": rows, "churn": 0},
            "created_at": datetime.now(UTC).isoformat(),
        }
        opened = VectorIndex.load(folder, metadata)
        check = _self_check(opened)
        metadata["self_check"] = check
        if check["found_first"] < check["queries"]:
            raise SelfCheckFailed(
                f"new {space} index found only {check['found_first']} of {check['queries']} "
                "sampled images first; the current index stays live"
            )
        pq_ids = pa.Table.from_pandas(ids.reset_index(drop=True), preserve_index=False)
        pq.write_table(pq_ids, folder / "ids.parquet")
        (folder / "metadata.json").write_text(json.dumps(metadata, indent=1))
        seconds = time.perf_counter() - started
        version = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{built.kind}"
        for name in _FILES:  # metadata.json last: a version without it is unfinished
            path = folder / name
            if path.exists():
                _upload(store, f"{prefix}{version}/{name}", path)
    store.publish_pointer(prefix + "CURRENT", version)
    pruned = _prune(store, prefix, keep, version)
    return IndexVersion(
        space,
        version,
        built.kind,
        rows,
        shape[1],
        round(seconds, 3),
        check,
        store.uri(f"{prefix}{version}/"),
        pruned,
    )


def _upload(store: Store, key: str, path: Path) -> None:
    if isinstance(store, LocalStore):  # large files: no copy through memory
        target = store.local_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{target.name}")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
    else:
        store.put_bytes(key, path.read_bytes())


def versions(store: Store, space: str) -> list[str]:
    """Finished versions of a space, oldest first."""
    prefix = space_prefix(space)
    found = {
        info.key[len(prefix) :].split("/", 1)[0]
        for info in store.list(prefix)
        if info.key.endswith("/metadata.json")
    }
    return sorted(found)


def _prune(store: Store, prefix: str, keep: int, current: str) -> tuple[str, ...]:
    space = prefix.strip("/").split("/")[-1]
    old = [v for v in versions(store, space) if v != current]
    doomed = old[: max(0, len(old) - (keep - 1))]
    for version in doomed:
        store.delete_prefix(f"{prefix}{version}/")
    return tuple(doomed)


@dataclass
class OpenedIndex:
    space: str
    version: str
    index: VectorIndex
    ids: pd.DataFrame
    metadata: dict

    @cached_property
    def _rows(self) -> dict[str, int]:
        """image_id → first row: a search by id is a dict lookup, not a scan of the ids."""
        rows: dict[str, int] = {}
        for row, image_id in enumerate(self.ids["image_id"].tolist()):
            rows.setdefault(image_id, row)
        return rows

    def column(self, name: str) -> list:
        """One id-map column as a Python list, built once: a search reads a few rows of it
        per query, and pandas row access costs more than the ANN search."""
        columns = self.__dict__.setdefault("_columns", {})
        if name not in columns:
            columns[name] = self.ids[name].tolist()
        return columns[name]

    def row_of(self, image_id: str) -> int:
        row = self._rows.get(image_id)
        if row is None:
            raise InputError(
                f"image id {image_id!r} is not in the {self.space} index {self.version}; "
                "check the id (tiefvision ingest lists them) or rebuild the index"
            )
        return row


def _cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tiefvision" / "indexes"


def _local_folder(store: Store, prefix: str) -> Path:
    if isinstance(store, LocalStore):
        return store.local_path(prefix)
    folder = _cache_root() / store.uri(prefix).replace("://", "/").replace(":", "_")
    if not (folder / "metadata.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for name in _FILES:
            key = prefix + name
            if store.exists(key):
                tmp = folder / f".tmp-{name}"
                tmp.write_bytes(store.get_bytes(key))
                os.replace(tmp, folder / name)
    return folder


def open_index(store: Store, space: str, version: str | None = None) -> OpenedIndex:
    """The current (or a named) version of a space, ready to search."""
    prefix = space_prefix(space)
    version = version or store.read_pointer(prefix + "CURRENT")
    if version is None:
        raise InputError(
            f"there is no {space} index yet: build it with `tiefvision rebuild-index "
            f"--space {space}`"
        )
    folder = _local_folder(store, f"{prefix}{version}/")
    metadata = json.loads((folder / "metadata.json").read_text())
    ids = pq.read_table(folder / "ids.parquet").to_pandas()
    return OpenedIndex(space, version, VectorIndex.load(folder, metadata), ids, metadata)
