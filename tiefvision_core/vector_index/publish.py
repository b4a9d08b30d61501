"""Publishing a new index version: stage, build, self-check, place, switch ``CURRENT``.

A build is staged in a folder named by its host and process (``indexes/.staging/`` inside a
local store, so the finished files are renamed into the version rather than copied;
``~/.cache/tiefvision/staging/`` for S3). A killed build leaves only that folder, which the
next build or ``tiefvision gc`` removes once its process is gone. The version's files are
placed with ``metadata.json`` last, then the space's ``CURRENT`` is switched
(:mod:`tiefvision_core.vector_index.pointer`) and versions beyond ``keep`` are pruned.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tiefvision_core.errors import InputError
from tiefvision_core.paths import user_cache_dir
from tiefvision_core.storage.layout import INDEX_STAGING
from tiefvision_core.storage.lock import process_gone
from tiefvision_core.storage.stores import LocalStore, Store
from tiefvision_core.vector_index.pointer import INPUTS_READ_AT, switch_current
from tiefvision_core.vector_index.vectors import BuiltIndex, IndexConfig, VectorIndex, build_index
from tiefvision_core.vector_index.versions import (
    STAGING_GRACE_S,
    VERSION_FILES,
    prunable,
    remove_version,
    self_check,
    space_prefix,
)

__all__ = ["IndexVersion", "SelfCheckFailed", "publish_index", "sweep_staging"]


class SelfCheckFailed(RuntimeError):
    """A freshly built index does not find its own images first: never published."""


_PID_REUSE_S = 24 * 3600.0


@dataclass(frozen=True)
class IndexVersion:
    space: str
    version: str
    kind: str
    size: int
    dimension: int
    build_seconds: float
    self_check: dict[str, int]  # {"queries", "found_first"} of this build's self-check
    uri: str
    pruned: tuple[str, ...] = ()
    #: The regression gate's comparison with the version that was live (a
    #: :class:`tiefvision_core.index.gate.GateComparison` as a dict); None: no gate ran.
    gate: dict[str, object] | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


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
    inputs_read_at: float | None = None,
    gate: Callable[[str], dict[str, object]] | None = None,
) -> IndexVersion:
    """Build, self-check, write and switch ``indexes/<space>/CURRENT`` to a new version.

    ``vectors`` (N, D) — or blocks of rows written one after another (reused rows, then
    new ones) — align with ``ids`` (image_id first). ``build`` makes the FAISS index from
    the stored vectors (default: :func:`build_index`, trained afresh; an incremental update
    passes one that reuses the previous version's training). ``training`` records how many
    rows the ANN training saw and how many were added, changed or removed since, which is
    what the next update decides on (default: a fresh build). Nothing is published when the
    self-check fails, nor when the live version was built from newer inputs
    (``inputs_read_at``: when the caller began reading them, default now; see
    :mod:`tiefvision_core.vector_index.pointer`). ``gate`` is called with the new version once its
    files are in place and before the switch (:func:`tiefvision_core.index.gate.
    regression_gate`): what it returns is kept as the result's ``gate``; when it raises,
    ``CURRENT`` stays, nothing is pruned and the new version stays on storage.
    """
    read_at = time.time() if inputs_read_at is None else inputs_read_at
    prefix = space_prefix(space)
    blocks = [vectors] if isinstance(vectors, np.ndarray) else list(vectors)
    rows = sum(len(block) for block in blocks)
    if rows == 0:
        raise InputError(f"nothing to index in space {space}: run `tiefvision encode` first")
    config = config or IndexConfig()
    build = build or (lambda stored: build_index(stored, grid, config))
    started = time.perf_counter()
    with _staging(store) as folder:
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
            INPUTS_READ_AT: read_at,
        }
        opened = VectorIndex.load(folder, metadata)
        check = self_check(opened)
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
        for name in VERSION_FILES:  # metadata.json last: a version without it is unfinished
            path = folder / name
            if path.exists():
                _place(store, f"{prefix}{version}/{name}", path)
    verdict = gate(version) if gate is not None else None
    switch_current(store, prefix, version, read_at)
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
        verdict,
    )


def _staging_root(store: Store) -> Path:
    """Where builds are staged: inside a local store (same file system, so a finished file
    is renamed into its version, never copied); in the local cache for S3."""
    if isinstance(store, LocalStore):
        return store.local_path(INDEX_STAGING)
    return user_cache_dir() / "staging"


def _owner_tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-"


def _stale(folder: Path, now: float, grace_s: float) -> bool:
    """A staging folder whose builder is gone: this host's process is dead, or (another
    host's, or a temporary folder of an earlier release) it was last touched more than
    ``grace_s`` ago. A live process with this PID may be another one that reused it: such
    a folder goes once untouched for a day (no build runs that long), whatever the grace."""
    try:
        age = now - folder.stat().st_mtime
    except FileNotFoundError:
        return False
    host, sep, rest = folder.name.rpartition("-")[0].rpartition("-")
    if sep and host == socket.gethostname() and rest.isdigit():
        return process_gone(int(rest)) or age > _PID_REUSE_S
    return age > grace_s


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def sweep_staging(
    store: Store, *, grace_s: float = STAGING_GRACE_S, dry_run: bool = False
) -> list[tuple[str, int]]:
    """Remove the staging folders of builds that died (SIGKILL, power loss), and the
    ``tiefvision-index-*`` temporary folders earlier releases built in; returns each
    removed folder's path and bytes. A live build's folder is never touched."""
    now = time.time()
    candidates = []
    root = _staging_root(store)
    if root.is_dir():
        candidates += [
            p for p in root.iterdir() if p.is_dir() and not p.name.startswith(_owner_tag())
        ]
    legacy = Path(tempfile.gettempdir())
    candidates += [p for p in legacy.glob("tiefvision-index-*") if p.is_dir()]
    removed = []
    for folder in candidates:
        if _stale(folder, now, grace_s):
            removed.append((str(folder), _folder_bytes(folder)))
            if not dry_run:
                shutil.rmtree(folder, ignore_errors=True)
    return removed


@contextmanager
def _staging(store: Store) -> Iterator[Path]:
    """A fresh staging folder named by host and process, removed afterwards; dead builds'
    folders are swept first, so a killed build costs disk only until the next one."""
    sweep_staging(store)
    root = _staging_root(store)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"{_owner_tag()}{uuid.uuid4().hex[:12]}"
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _place(store: Store, key: str, path: Path) -> None:
    """Move a staged file to ``key``: a rename on a local store (the staging folder is on
    the same file system), one PUT on S3."""
    if isinstance(store, LocalStore):
        target = store.local_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    else:
        store.put_bytes(key, path.read_bytes())


def _prune(store: Store, prefix: str, keep: int, current: str) -> tuple[str, ...]:
    """The oldest finished versions beyond ``keep`` (never ``current``) and unfinished
    versions of killed builds go."""
    space = prefix.strip("/").split("/")[-1]
    doomed = [v.version for v in prunable(store, space, keep, protect={current})]
    for version in doomed:
        remove_version(store, space, version)
    return tuple(doomed)
