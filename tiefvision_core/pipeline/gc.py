"""Garbage collection: delete what nothing live refers to, so a photo removed from the
source (or re-shot) is gone from storage once the retention has passed.

Why a separate pass rather than deleting inside each stage: stages only ever add (a shard
named by its input set, a version beside the live one), which is what makes them safe to
kill and rerun and lets a reader keep an old version open. What became garbage can only be
judged against everything live at once — the current manifest, the live and retained index
and model versions, the current locator's boxes — and only while no reindex runs, so
:func:`collect_garbage` is called with the store's reindex lock held.

What goes (see ``docs/formats.md``):

* **encodings and boxes** of photos that are no longer usable with these bytes (removed,
  re-shot, re-located): a shard or part with nothing live is deleted, one with some live
  rows is rewritten without the others (a new key, written before the old one is deleted,
  so a reader never misses a live row);
* **versions** beyond ``Retention.versions`` — indexes (``index_store.prunable``), locator
  and similarity models (with the boxes of dropped locators), manifests and their rejects —
  never the live one, nor a model a retained index was built with; rows of removed photos
  leave the current manifest once no retained older manifest still holds them as usable;
* **what names a removed photo** once no retained manifest version lists its bytes any
  more (the deletion a privacy request needs): its annotations (box, triplets) in the
  database, annotation snapshots and crops datasets (whole-photo feature maps) naming it;
* **leftovers** older than ``Retention.grace_s``: ``.tmp-*`` files of killed writes, work
  lists (``_plans/``), ingest staging, unfinished versions, staging folders of dead builds.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow as pa

from tiefvision_core.catalog.manifest import (
    publish_manifest,
    read_manifest,
    usable_rows,
)
from tiefvision_core.encoding.shards import current_boxes
from tiefvision_core.errors import ConfigError
from tiefvision_core.storage.layout import (
    BOXES_PREFIX,
    CROPS_LATEST,
    CROPS_PREFIX,
    ENCODINGS_PREFIX,
    LOCATOR_PREFIX,
    MANIFEST_CURRENT,
    MANIFEST_PREFIX,
    MODEL_PREFIXES,
    REJECTS_PREFIX,
    SIMILARITY_PREFIX,
    SNAPSHOT_PREFIX,
    STAGING_PREFIX,
    current_key,
)
from tiefvision_core.storage.stores import LocalStore, ObjectInfo, Store
from tiefvision_core.vector_index.publish import sweep_staging
from tiefvision_core.vector_index.versions import (
    SPACES,
    STAGING_GRACE_S,
    prunable,
    remove_version,
    space_prefix,
    versions,
)

if TYPE_CHECKING:
    from tiefvision_core.annotations.following import HeldBytes
    from tiefvision_core.annotations.repository import AnnotationDatabase

__all__ = ["GcItem", "GcReport", "Retention", "collect_garbage"]


@dataclass(frozen=True)
class Retention:
    """How much history survives a collection."""

    versions: int = 3  # index, model and manifest versions kept per kind, the live one included
    grace_s: float = STAGING_GRACE_S  # leftovers younger than this may belong to a running job

    def __post_init__(self) -> None:
        if self.versions < 1:
            raise ConfigError("retention must keep at least 1 version (the live one)")
        if self.grace_s < 0:
            raise ConfigError("the grace period cannot be negative")


Action = Literal["delete", "rewrite"]


@dataclass(frozen=True)
class GcItem:
    """One thing removed (or, in a dry run, that would be)."""

    what: str  # encodings, boxes, index, model, manifest, annotations, snapshots, crops, temporary
    #: storage key (a folder ends with "/"), a local path for build staging, or an
    #: annotation as ``annotations:boxes/<image_id>`` / ``annotations:triplets/<r>,<p>,<n>``
    key: str
    bytes: int  # freed (a rewrite: the rows dropped, pro rata of the object's size)
    action: Action = "delete"
    rows: int = 0  # rows dropped from a rewritten object


@dataclass(frozen=True)
class GcReport:
    store_url: str
    dry_run: bool
    items: tuple[GcItem, ...] = ()
    seconds: float = 0.0
    totals: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.items)

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "bytes": self.bytes}


def _age(info: ObjectInfo, now: float) -> float:
    return now - info.modified if info.modified is not None else float("inf")


def _folders(store: Store, prefix: str) -> dict[str, list[ObjectInfo]]:
    """First path segment under ``prefix`` → its objects."""
    out: dict[str, list[ObjectInfo]] = {}
    for info in store.list(prefix):
        rest = info.key[len(prefix) :]
        if "/" in rest:
            out.setdefault(rest.split("/", 1)[0], []).append(info)
    return out


class _Collector:
    """Collects items; deletes them as it goes unless it is a dry run."""

    def __init__(self, store: Store, retention: Retention, dry_run: bool) -> None:
        self.store, self.retention, self.dry_run = store, retention, dry_run
        self.items: list[GcItem] = []
        self.now = time.time()

    def delete(self, what: str, infos: Iterable[ObjectInfo], folder: str | None = None) -> None:
        infos = list(infos)
        if folder is not None:
            self.items.append(GcItem(what, folder, sum(i.size for i in infos)))
            if not self.dry_run:
                self.store.delete_prefix(folder)
            return
        for info in infos:
            self.items.append(GcItem(what, info.key, info.size))
            if not self.dry_run:
                self.store.delete(info.key)

    def filter_rows(self, what: str, info: ObjectInfo, live: _Liveness) -> None:
        """Drop the dead rows of one Parquet object: delete it when none is live, else
        write the live rows under a new name and then delete the old object. Only the key
        columns are read to decide (the vectors only of a shard being rewritten)."""
        keep = live(self.store.read_parquet(info.key, list(live.columns)))
        dropped = keep.count(False)
        if dropped == 0:
            return
        if dropped == len(keep):
            self.delete(what, [info])
            return
        self.items.append(
            GcItem(what, info.key, info.size * dropped // len(keep), "rewrite", dropped)
        )
        if self.dry_run:
            return
        table = self.store.read_parquet(info.key).filter(pa.array(keep, pa.bool_()))
        folder, name = info.key.rsplit("/", 1)
        stem, ext = name.split("-", 1)[0], name.rsplit(".", 1)[-1]
        kept = json.dumps([name, table.select(["image_id", "sha256"]).to_pylist()])
        new_key = f"{folder}/{stem}-{hashlib.sha256(kept.encode()).hexdigest()[:24]}.{ext}"
        plain = ("vector",) if "vector" in table.column_names else ()
        self.store.write_parquet(new_key, table, plain_columns=plain)
        self.store.delete(info.key)


class _Liveness:
    """Which rows of a shard or part are live, from their key columns: (image_id, sha256)
    usable, and for box crops the box the photo is encoded with now."""

    def __init__(self, boxes: dict[tuple[str, str], tuple], *, by_box: bool) -> None:
        self.boxes, self.by_box = boxes, by_box
        self.columns = ("image_id", "sha256", "box") if by_box else ("image_id", "sha256")

    def __call__(self, keys: pa.Table) -> list[bool]:
        pairs = zip(keys["image_id"].to_pylist(), keys["sha256"].to_pylist(), strict=True)
        if not self.by_box:
            return [pair in self.boxes for pair in pairs]
        return [
            self.boxes.get(pair) == tuple(int(v) for v in (box or ()))
            for pair, box in zip(pairs, keys["box"].to_pylist(), strict=True)
        ]


def _encodings(c: _Collector, boxes: dict[tuple[str, str], tuple]) -> None:
    """Shards of every encoder, kind and version: rows of photos no longer usable with
    those bytes go; a box crop also when its box is not the photo's current one."""
    whole, cropped = _Liveness(boxes, by_box=False), _Liveness(boxes, by_box=True)
    for info in c.store.list(ENCODINGS_PREFIX):
        parts = info.key.split("/")  # encodings/<encoder>/<kind>/<version>/shard-<id>
        if len(parts) == 5 and parts[4].startswith("shard-"):
            c.filter_rows("encodings", info, cropped if parts[2] == "box" else whole)


def _kept_models(store: Store, keep: int, grace_s: float) -> dict[str, set[str]]:
    """Model versions that stay per kind: the newest ``keep`` finished ones, the live one,
    and any similarity model a retained index version was built with."""
    kept: dict[str, set[str]] = {}
    for prefix in MODEL_PREFIXES:
        finished = sorted(
            name
            for name, infos in _folders(store, prefix).items()
            if any(i.key.endswith("/metadata.json") for i in infos)
        )
        live = store.read_pointer(current_key(prefix))
        kept[prefix] = set(finished[-keep:]) | ({live} if live else set())
    for space in SPACES:
        prefix = space_prefix(space)
        doomed = {v.version for v in prunable(store, space, keep, grace_s=grace_s)}
        for version in (v for v in versions(store, space) if v not in doomed):
            try:
                source = json.loads(store.get_bytes(f"{prefix}{version}/metadata.json"))["source"]
            except (KeyError, ValueError):
                continue
            if source.get("model_version"):
                kept[SIMILARITY_PREFIX].add(str(source["model_version"]))
    return kept


def _versioned(
    c: _Collector, kept_models: dict[str, set[str]], boxes: dict[tuple[str, str], tuple]
) -> None:
    """Index and model versions beyond the retention, boxes of dropped locators, dead rows
    of the kept locators' boxes."""
    keep, grace = c.retention.versions, c.retention.grace_s
    for space in SPACES:
        for info in prunable(c.store, space, keep, grace_s=grace):
            folder = f"{space_prefix(space)}{info.version}/"
            c.items.append(GcItem("index", folder, info.bytes))
            if not c.dry_run:
                remove_version(c.store, space, info.version)
    for prefix, kept in kept_models.items():
        for name, infos in _folders(c.store, prefix).items():
            finished = any(i.key.endswith("/metadata.json") for i in infos)
            young = min(_age(i, c.now) for i in infos) <= grace
            if name not in kept and (finished or not young):
                c.delete("model", infos, folder=f"{prefix}{name}/")
    locators = kept_models[LOCATOR_PREFIX]
    for name, infos in _folders(c.store, BOXES_PREFIX).items():
        if name not in locators:
            if min(_age(i, c.now) for i in infos) > grace:  # a locate may be starting
                c.delete("boxes", infos, folder=f"{BOXES_PREFIX}{name}/")
            continue
        for part in infos:
            if part.key.rsplit("/", 1)[-1].startswith("part-"):
                c.filter_rows("boxes", part, _Liveness(boxes, by_box=False))


def _manifest_keys(store: Store) -> list[str]:
    return sorted(i.key for i in store.list(MANIFEST_PREFIX) if i.key.endswith(".parquet"))


def _retained_older(store: Store, current: str, keep: int) -> list[str]:
    """The older manifest versions the retention keeps beside the current one."""
    older = [k for k in _manifest_keys(store) if k != f"{MANIFEST_PREFIX}{current}.parquet"]
    return older[-(keep - 1) :] if keep > 1 else []


def _held_bytes(store: Store, keep: int) -> HeldBytes | None:
    """(image_id, sha256) of every photo a retained manifest version still lists (usable
    or rejected: the bytes are in the source), and those ids; None before the first ingest.
    Whatever names other bytes names a photo removed longer than the retention ago."""
    current = store.read_pointer(MANIFEST_CURRENT)
    if current is None:
        return None
    keys = [*_retained_older(store, current, keep), f"{MANIFEST_PREFIX}{current}.parquet"]
    pairs: set[tuple[str, str]] = set()
    for key in keys:
        table = store.read_parquet(key, ["image_id", "sha256", "status"])
        pairs.update(
            (r["image_id"], r["sha256"]) for r in table.to_pylist() if r["status"] != "removed"
        )
    return pairs, {image_id for image_id, _ in pairs}


def _manifests(c: _Collector) -> None:
    """Manifest (and rejects) versions beyond the retention; rows of removed photos leave
    the current manifest once no retained older version holds them as usable."""
    store, keep = c.store, c.retention.versions
    current = store.read_pointer(MANIFEST_CURRENT)
    if current is None:
        return
    names = _manifest_keys(store)
    retained = _retained_older(store, current, keep)
    manifest = read_manifest(store)
    assert manifest is not None
    still = {
        r for key in retained for r in usable_rows(store.read_parquet(key))["image_id"].to_pylist()
    }
    statuses = manifest["status"].to_pylist()
    ids = manifest["image_id"].to_pylist()
    drop = [s == "removed" and i not in still for s, i in zip(statuses, ids, strict=True)]
    rewrite = any(drop)
    doomed = []
    for prefix in (MANIFEST_PREFIX, REJECTS_PREFIX):
        listed = sorted(
            (i for i in store.list(prefix) if i.key.endswith(".parquet")), key=lambda i: i.key
        )
        # A rewrite publishes a new current version: the old one becomes the newest other.
        others = [i for i in listed if rewrite or i.key != f"{prefix}{current}.parquet"]
        doomed += others[: max(0, len(others) - (keep - 1))]
    if rewrite:
        c.items.append(
            GcItem("manifest", f"{MANIFEST_PREFIX}{current}.parquet", 0, "rewrite", sum(drop))
        )
        if not c.dry_run:
            frame = manifest.filter(pa.array([not d for d in drop], pa.bool_())).to_pandas()
            publish_manifest(store, frame, keep=len(names) + 1)  # pruned below, reported
    c.delete("manifest", doomed)


def _named(table: pa.Table) -> set[tuple[str, str | None]]:
    """The (image_id, sha256) pairs a snapshot or crops work list names: its ``image_id`` /
    ``sha256`` columns, or a triplet snapshot's ``<role>`` / ``<role>_sha256`` ones."""
    roles = ("image_id",) if "image_id" in table.column_names else _TRIPLET_ROLES
    named: set[tuple[str, str | None]] = set()
    for role in roles:
        sha = "sha256" if role == "image_id" else f"{role}_sha256"
        named.update(zip(table[role].to_pylist(), table[sha].to_pylist(), strict=True))
    return named


_TRIPLET_ROLES = ("reference", "positive", "negative")


def _names_gone(table: pa.Table, held: HeldBytes) -> bool:
    pairs, ids = held
    return any(
        (image_id not in ids) if sha is None else ((image_id, sha) not in pairs)
        for image_id, sha in _named(table)
    )


def _snapshots(c: _Collector, held: HeldBytes) -> None:
    """Annotation snapshots naming a photo no retained manifest lists: a model that trained
    on one keeps its key and digest in its metadata, the rows go."""
    for info in c.store.list(SNAPSHOT_PREFIX):
        if info.key.endswith(".parquet") and _names_gone(c.store.read_parquet(info.key), held):
            c.delete("snapshots", [info])


def _crops(c: _Collector, held: HeldBytes) -> None:
    """Crops datasets (whole-photo feature maps of annotated photos) naming a photo no
    retained manifest lists; ``crops/LATEST`` goes with the dataset it names. An
    unfinished dataset is judged once it is older than the grace (a build may be running)."""
    latest = c.store.read_pointer(CROPS_LATEST)
    for name, infos in _folders(c.store, CROPS_PREFIX).items():
        work = next((i for i in infos if i.key.endswith("/_work.parquet")), None)
        finished = any(i.key.endswith("/dataset.json") for i in infos)
        young = min(_age(i, c.now) for i in infos) <= c.retention.grace_s
        if work is None or (young and not finished):
            continue
        if _names_gone(c.store.read_parquet(work.key, ["image_id", "sha256"]), held):
            c.delete("crops", infos, folder=f"{CROPS_PREFIX}{name}/")
            if name == latest:
                c.delete("crops", c.store.list(CROPS_LATEST))


def _annotations(c: _Collector, held: HeldBytes, annotations: AnnotationDatabase) -> None:
    """Boxes and triplets of bytes no retained manifest lists, from the database."""
    unheld = annotations.unheld(held)
    c.items += [GcItem("annotations", f"annotations:boxes/{i}", 0) for i in unheld.boxes]
    c.items += [
        GcItem("annotations", f"annotations:triplets/{','.join(t)}", 0) for t in unheld.triplets
    ]
    if not c.dry_run:
        annotations.forget(unheld)


def _leftovers(c: _Collector) -> None:
    """Work lists, ingest staging, temporary files of killed writes and dead builds'
    staging folders, all older than the grace period."""
    grace = c.retention.grace_s
    for prefix in (ENCODINGS_PREFIX, BOXES_PREFIX):
        plans = [i for i in c.store.list(prefix) if "/_plans/" in i.key]
        c.delete("temporary", [i for i in plans if _age(i, c.now) > grace])
    staged = list(c.store.list(STAGING_PREFIX))
    c.delete("temporary", [i for i in staged if _age(i, c.now) > grace])
    if isinstance(c.store, LocalStore):
        for file, size in _temporary_files(c.store.root, c.now, grace):
            c.items.append(GcItem("temporary", file.relative_to(c.store.root).as_posix(), size))
            if not c.dry_run:
                file.unlink(missing_ok=True)
    for path, size in sweep_staging(c.store, grace_s=grace, dry_run=c.dry_run):
        c.items.append(GcItem("temporary", path, size))


def _temporary_files(root: Path, now: float, grace_s: float) -> Iterator[tuple[Path, int]]:
    """``.tmp-*`` files (a write killed between its temporary file and the rename) under a
    local store, hidden folders (build staging, swept on its own) left out."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".tmp-"):
                path = Path(dirpath) / name
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                if now - stat.st_mtime > grace_s:
                    yield path, stat.st_size


def collect_garbage(
    store: Store,
    retention: Retention | None = None,
    *,
    dry_run: bool = False,
    annotations: AnnotationDatabase | None = None,
) -> GcReport:
    """Remove (or, ``dry_run``, list) everything nothing live refers to. The caller holds
    the store's reindex lock: a run that is half-way would otherwise lose its work.
    ``annotations``: the store's annotations database (None: there is none)."""
    started = time.perf_counter()
    retention = retention or Retention()
    collector = _Collector(store, retention, dry_run)
    kept_models = _kept_models(store, retention.versions, retention.grace_s)
    held = _held_bytes(store, retention.versions)  # before _manifests prunes any version
    if held is not None:
        if annotations is not None:
            _annotations(collector, held, annotations)
        _snapshots(collector, held)
        _crops(collector, held)
    _manifests(collector)
    boxes = current_boxes(store) or {}  # (image_id, sha256) of usable photos → crop box
    _encodings(collector, boxes)
    _versioned(collector, kept_models, boxes)
    _leftovers(collector)
    totals: dict[str, dict[str, int]] = {}
    for item in collector.items:
        entry = totals.setdefault(item.what, {"objects": 0, "bytes": 0})
        entry["objects"] += 1
        entry["bytes"] += item.bytes
    return GcReport(
        store.url,
        dry_run,
        tuple(collector.items),
        round(time.perf_counter() - started, 3),
        totals,
    )
