"""Versioned indexes on storage: the spaces, their versions, switching and opening one.

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

A new version is built and published by :mod:`tiefvision_core.vector_index.publish`; here
versions are named, listed (:func:`list_versions`), pruned, switched back or forth
(:func:`use_version`, after the target passes its self-check again) and opened for search
(:func:`open_index`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tiefvision_core.catalog.live import LiveCatalog
from tiefvision_core.errors import InputError, TiefVisionError, one_of
from tiefvision_core.paths import user_cache_dir
from tiefvision_core.storage.layout import current_key, index_prefix
from tiefvision_core.storage.stores import LocalStore, Store
from tiefvision_core.vector_index.vectors import VectorIndex

__all__ = [
    "SPACES",
    "STAGING_GRACE_S",
    "VERSION_FILES",
    "OpenedIndex",
    "Space",
    "VersionInfo",
    "VersionRefused",
    "check_space",
    "list_versions",
    "open_index",
    "open_live_index",
    "prunable",
    "remove_version",
    "self_check",
    "space_prefix",
    "use_version",
    "version_time",
    "versions",
]

Space = Literal["unsupervised", "supervised"]
SPACES: tuple[Space, ...] = ("unsupervised", "supervised")
VERSION_FILES = ("vectors.npy", "index.faiss", "projection.npy", "ids.parquet", "metadata.json")


class VersionRefused(TiefVisionError):
    """``index use`` names a version that is gone, unfinished or fails its self-check."""


#: A staging folder or unfinished version younger than this may belong to a build still
#: running on another machine: never removed.
STAGING_GRACE_S = 6 * 3600.0


def check_space(space: str) -> Space:
    """``space`` when it is one of :data:`SPACES`, else an InputError naming them."""
    checked = one_of(space, SPACES)
    if checked is None:
        raise InputError(f"unknown space {space!r}: choose one of {', '.join(SPACES)}")
    return checked


def space_prefix(space: str) -> str:
    return index_prefix(check_space(space))


def self_check(index: VectorIndex, sample: int = 50) -> dict[str, int]:
    """A sample of the index's own vectors must come back first (a duplicate image with the
    same score counts as found)."""
    rows = np.linspace(0, len(index) - 1, num=min(sample, len(index))).astype(int)
    queries = np.asarray(index.vectors[rows], np.float32)
    scores, found = index.search(queries, 1)
    own = np.einsum("ij,ij->i", queries, queries)
    ok = (found[:, 0] == rows) | (np.abs(scores[:, 0] - own) <= 1e-3)
    return {"queries": len(rows), "found_first": int(ok.sum())}


def versions(store: Store, space: str) -> list[str]:
    """Finished versions of a space, oldest first."""
    prefix = space_prefix(space)
    found = {
        info.key[len(prefix) :].split("/", 1)[0]
        for info in store.list(prefix)
        if info.key.endswith("/metadata.json")
    }
    return sorted(found)


#: How versions are named: by their UTC creation time, to the microsecond for indexes
#: (``20260102T030405123456Z-kind``), to the second for models (``20260102T030405Z-hash``).
_VERSION_STAMPS = ("%Y%m%dT%H%M%SZ", "%Y%m%dT%H%M%S%fZ")  # seconds first: %f would eat one


def version_time(version: str) -> float | None:
    """When a version (index or model) was made, from its name; None for another name."""
    for stamp in _VERSION_STAMPS:
        try:
            made = datetime.strptime(version.split("-", 1)[0], stamp)
        except ValueError:
            continue
        return made.replace(tzinfo=UTC).timestamp()
    return None


@dataclass(frozen=True)
class VersionInfo:
    """One folder under ``indexes/<space>/``, as ``tiefvision index list`` shows it."""

    space: str
    version: str
    finished: bool  # metadata.json is there (written last)
    live: bool  # CURRENT names it
    kind: str | None
    rows: int | None
    bytes: int
    created_at: str | None
    self_check: dict[str, object] | None  # the stored result of the build's self-check

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _folder_files(store: Store, prefix: str) -> dict[str, dict[str, int]]:
    """version → {file name: bytes} of every folder under ``prefix``, temporary files of
    killed writes included (a local folder holding only those is listed too)."""
    folders: dict[str, dict[str, int]] = {}
    if isinstance(store, LocalStore):
        root = store.local_path(prefix.rstrip("/"))
        if root.is_dir():
            for folder in root.iterdir():
                if folder.is_dir() and not folder.name.startswith("."):
                    files = _local_folder_files(folder)
                    if files is not None:
                        folders[folder.name] = files
        return folders
    for info in store.list(prefix):
        rest = info.key[len(prefix) :]
        if "/" in rest:
            version, name = rest.split("/", 1)
            folders.setdefault(version, {})[name] = info.size
    return folders


def _local_folder_files(folder: Path) -> dict[str, int] | None:
    """{file name: bytes} of a local version folder; ``None`` when the folder vanished
    while it was being walked. Why: another publish of the same space may prune it at that
    moment (two rebuilds racing); listed a moment later it would not be there at all, so it
    is left out instead of failing this publish with the walk's FileNotFoundError."""
    files: dict[str, int] = {}
    try:
        for path in folder.rglob("*"):
            try:
                if path.is_file():
                    files[path.relative_to(folder).as_posix()] = path.stat().st_size
            except FileNotFoundError:
                continue  # removed between the listing and its stat
    except FileNotFoundError:
        if not folder.exists():
            return None
    return files


def list_versions(store: Store, space: str) -> list[VersionInfo]:
    """Every version folder of a space, oldest first, finished or not, with its size and
    the self-check it passed when built."""
    prefix = space_prefix(space)
    live = store.read_pointer(current_key(prefix))
    out = []
    for version, files in sorted(_folder_files(store, prefix).items()):
        metadata: dict = {}
        if "metadata.json" in files:
            try:
                metadata = json.loads(store.get_bytes(f"{prefix}{version}/metadata.json"))
            except (ValueError, TiefVisionError):
                metadata = {}
        out.append(
            VersionInfo(
                space=space,
                version=version,
                finished=bool(metadata),
                live=version == live,
                kind=metadata.get("kind"),
                rows=metadata.get("size"),
                bytes=sum(files.values()),
                created_at=metadata.get("created_at"),
                self_check=metadata.get("self_check"),
            )
        )
    return out


def prunable(
    store: Store,
    space: str,
    keep: int,
    *,
    protect: set[str] | frozenset[str] = frozenset(),
    grace_s: float = STAGING_GRACE_S,
) -> list[VersionInfo]:
    """Versions beyond ``keep`` — the live one and ``protect`` first, then the newest
    finished others — and unfinished versions older than ``grace_s`` (a killed build's)."""
    listed = list_versions(store, space)
    pinned = {v.version for v in listed if v.live} | set(protect)
    others = [v.version for v in listed if v.finished and v.version not in pinned]
    room = max(0, keep - len(pinned)) if pinned else keep
    kept = pinned | set(others[len(others) - room :] if room else ())
    now = time.time()
    doomed = []
    for info in listed:
        if info.version in kept:
            continue
        if not info.finished:
            made = version_time(info.version)
            if made is not None and now - made <= grace_s:
                continue
        doomed.append(info)
    return doomed


def remove_version(store: Store, space: str, version: str) -> None:
    """Delete a version folder whole: its objects, a killed write's temporary files and
    the folder itself."""
    prefix = f"{space_prefix(space)}{version}/"
    store.delete_prefix(prefix)
    if isinstance(store, LocalStore):
        shutil.rmtree(store.local_path(prefix.rstrip("/")), ignore_errors=True)


def use_version(store: Store, space: str, version: str) -> VersionInfo:
    """Make ``version`` the live one (roll back or forward): it must exist, be finished and
    find a sample of its own photos first again now — the files are re-read, not the
    stored result trusted. Then ``CURRENT`` is switched in one atomic write."""
    prefix = space_prefix(space)
    listed = {v.version: v for v in list_versions(store, space)}
    info = listed.get(version)
    what = f"{space} index version {version}"
    hint = f"`tiefvision index list --space {space}` lists the versions"
    if info is None:
        raise VersionRefused(f"{what} does not exist (pruned or never built): {hint}")
    if not info.finished:
        raise VersionRefused(f"{what} is unfinished (its build was killed): {hint}")
    try:
        opened = open_index(store, space, version)
        if not len(opened.index) == len(opened.ids) == int(opened.metadata["size"]):
            raise ValueError("rows of vectors, ids and metadata differ")
        check = self_check(opened.index)
    except (OSError, ValueError, KeyError, RuntimeError, TiefVisionError) as error:
        raise VersionRefused(f"{what} cannot be opened ({error}): pick another; {hint}") from None
    if check["found_first"] < check["queries"]:
        raise VersionRefused(
            f"{what} fails its self-check ({check['found_first']} of {check['queries']} "
            f"sampled photos found first): pick another; {hint}"
        )
    store.publish_pointer(current_key(prefix), version)
    return VersionInfo(**{**asdict(info), "live": True, "self_check": check})


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
        for row, image_id in enumerate(self.column("image_id")):  # its strings, not a copy
            rows.setdefault(image_id, row)
        return rows

    def column(self, name: str) -> list:
        """One id-map column as a Python list, built once: a search reads a few rows of it
        per query, and pandas row access costs more than the ANN search."""
        columns = self.__dict__.setdefault("_columns", {})
        if name not in columns:
            columns[name] = self.ids[name].tolist()
        return columns[name]

    def rows_outside(self, catalog: LiveCatalog) -> frozenset[int]:
        """Rows whose photo ``catalog`` does not list as usable with the bytes (sha256)
        this version indexed: removed, re-shot or rejected since it was built. Why cached:
        a search drops these rows with a set lookup per candidate; working them out is a
        pass over every row, paid once per catalog version, not per query."""
        cached = self.__dict__.get("_outside")
        if cached is None or cached[0] != catalog.version:
            cached = (catalog.version, _rows_outside(self.ids, catalog))
            self.__dict__["_outside"] = cached  # one assignment: safe to race
        return cached[1]

    def row_of(self, image_id: str) -> int:
        row = self._rows.get(image_id)
        if row is None:
            raise InputError(
                f"image id {image_id!r} is not in the {self.space} index {self.version}; "
                "check the id (tiefvision ingest lists them) or rebuild the index"
            )
        return row


def _rows_outside(ids: pd.DataFrame, catalog: LiveCatalog) -> frozenset[int]:
    """See :meth:`OpenedIndex.rows_outside`; an id map without sha256 (built by hand, as
    some tests and benches do) is matched on image_id alone. A key joins id and sha256
    with '/', which neither can contain."""
    indexed = pa.array(ids["image_id"], pa.string())
    listed = catalog.image_ids
    if "sha256" in ids.columns:
        indexed = pc.binary_join_element_wise(indexed, pa.array(ids["sha256"], pa.string()), "/")
        listed = pc.binary_join_element_wise(listed, catalog.sha256, "/")
    inside = pc.fill_null(pc.is_in(indexed, value_set=listed), False)
    return frozenset(np.flatnonzero(~inside.to_numpy(zero_copy_only=False)).tolist())


def _cache_root() -> Path:
    return user_cache_dir() / "indexes"


def _local_folder(store: Store, prefix: str) -> Path:
    if isinstance(store, LocalStore):
        return store.local_path(prefix)
    folder = _cache_root() / store.uri(prefix).replace("://", "/").replace(":", "_")
    if not (folder / "metadata.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for name in VERSION_FILES:
            key = prefix + name
            if store.exists(key):
                tmp = folder / f".tmp-{name}"
                tmp.write_bytes(store.get_bytes(key))
                os.replace(tmp, folder / name)
    return folder


def open_live_index(store: Store, space: str) -> OpenedIndex | None:
    """The live version of a space, or None when the space has none yet."""
    if store.read_pointer(current_key(space_prefix(space))) is None:
        return None
    return open_index(store, space)


def open_index(store: Store, space: str, version: str | None = None) -> OpenedIndex:
    """The current (or a named) version of a space, ready to search."""
    prefix = space_prefix(space)
    version = version or store.read_pointer(current_key(prefix))
    if version is None:
        raise InputError(
            f"there is no {space} index yet: build it with `tiefvision rebuild-index "
            f"--space {space}`"
        )
    folder = _local_folder(store, f"{prefix}{version}/")
    metadata = json.loads((folder / "metadata.json").read_text())
    ids = pq.read_table(folder / "ids.parquet").to_pandas()
    return OpenedIndex(space, version, VectorIndex.load(folder, metadata), ids, metadata)
