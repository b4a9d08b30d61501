"""What a catalog source holds: entries to ingest, entries refused, entries skipped.

Why not :meth:`LocalStore.list`: that lists the pipeline's *own* store, whose files it wrote
itself. A user's photo folder holds anything — FIFOs, sockets, device links, links that loop
or dangle, links to ``/etc/passwd`` — and a listing that ``stat()``\\ s through them blocks,
crashes (``ELOOP``) or leaks files from outside the catalog. This walker ``lstat()``\\ s every
entry (never opens one), follows a link only as far as deciding where it leads, and turns
each odd entry into a *refusal* (a reject row with a reason, so the user sees it) or a
*skip* (hidden files and folders, linked folders: counted in the summary).

An S3 source holds only objects: its listing is the store's own, less hidden names.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from tiefvision_core.storage.stores import LocalStore, ObjectInfo, Store, not_regular_detail

__all__ = ["SKIP_REASONS", "Refused", "SourceListing", "list_source"]

#: Why an entry of a source folder is left out without a manifest row (see docs/formats.md).
SKIP_REASONS: dict[str, str] = {
    "hidden": "a file or folder whose name starts with '.' (.DS_Store, ._x.jpg, .git)",
    "linked_folder": "a symbolic link to a folder: not descended (TIEFVISION_FOLLOW_SYMLINKS)",
    "unreadable_folder": "a folder that cannot be listed (permissions)",
}


@dataclass(frozen=True)
class Refused:
    """An entry that looks like a photo but is never read: it becomes a reject row."""

    key: str
    reason: str  # a code of tiefvision_core.catalog.imaging.REJECT_REASONS
    detail: str


@dataclass(frozen=True)
class SourceListing:
    """A source's entries, sorted by key: readable candidates, refusals and skips."""

    entries: tuple[ObjectInfo, ...]
    refused: tuple[Refused, ...] = ()
    #: (key, reason code of :data:`SKIP_REASONS`)
    skipped: tuple[tuple[str, str], ...] = ()


def list_source(source: Store, *, follow_symlinks: bool = False) -> SourceListing:
    """Everything a source holds, never opening, blocking on or crashing over an entry.

    ``follow_symlinks=False`` (the default) refuses a link that leads out of the source
    folder (``outside_source``) and leaves linked folders out; links inside it are fine.
    """
    if not isinstance(source, LocalStore):
        return _object_listing(source)
    walker = _Walker(source.root, follow_symlinks)
    walker.walk(source.root, "")
    return SourceListing(
        tuple(sorted(walker.entries, key=lambda info: info.key)),
        tuple(sorted(walker.refused, key=lambda item: item.key)),
        tuple(sorted(walker.skipped)),
    )


def _object_listing(source: Store) -> SourceListing:
    """An object store holds no special files; hidden names are left out as in a folder (a
    catalog synced from a Mac to S3 ingests like the folder did)."""
    entries: list[ObjectInfo] = []
    hidden: set[str] = set()
    for info in source.list():
        parts = info.key.split("/")
        first = next((i for i, part in enumerate(parts) if part.startswith(".")), None)
        if first is None:
            entries.append(info)
        else:  # a hidden "folder" counts once, as it does on disk
            hidden.add("/".join(parts[: first + 1]))
    return SourceListing(tuple(entries), skipped=tuple((key, "hidden") for key in sorted(hidden)))


class _Walker:
    """One recursive ``os.scandir`` pass that sorts entries into the listing's three lists."""

    def __init__(self, root: Path, follow_symlinks: bool) -> None:
        self.root = root
        self.follow = follow_symlinks
        self.entries: list[ObjectInfo] = []
        self.refused: list[Refused] = []
        self.skipped: list[tuple[str, str]] = []
        self._seen_dirs: set[tuple[int, int]] = set()  # followed folder links must not loop

    def walk(self, folder: Path, prefix: str) -> None:
        try:
            folder_stat = os.stat(folder)
            self._seen_dirs.add((folder_stat.st_dev, folder_stat.st_ino))
            with os.scandir(folder) as scan:
                found = list(scan)
        except OSError:
            self.skipped.append((prefix.rstrip("/") or ".", "unreadable_folder"))
            return
        for entry in found:
            key = prefix + entry.name
            if entry.name.startswith("."):
                self.skipped.append((key, "hidden"))
                continue
            try:
                own = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed while listing: as if never there
                continue
            except OSError as error:
                self.refused.append(Refused(key, "unreadable", _strerror(error)))
                continue
            if stat.S_ISLNK(own.st_mode):
                self._link(Path(entry.path), key, own)
            elif stat.S_ISDIR(own.st_mode):
                self.walk(Path(entry.path), key + "/")
            else:
                self._file(key, own, own)

    def _link(self, path: Path, key: str, own: os.stat_result) -> None:
        """Decide a symbolic link by where it leads, without opening its target."""
        try:
            target = os.stat(path)  # follows the link; ELOOP for a link to itself
        except FileNotFoundError:
            self.refused.append(Refused(key, "vanished", _dangling_detail(path)))
            return
        except OSError as error:
            self.refused.append(Refused(key, "unreadable", _strerror(error)))
            return
        resolved = Path(os.path.realpath(path))
        inside = resolved == self.root or self.root in resolved.parents
        if stat.S_ISDIR(target.st_mode):
            if not self.follow:
                self.skipped.append((key, "linked_folder"))
            elif (target.st_dev, target.st_ino) not in self._seen_dirs:
                self.walk(path, key + "/")
            return
        if not inside and not self.follow:
            self.refused.append(
                Refused(
                    key,
                    "outside_source",
                    "a link out of the source folder: not read (set "
                    "TIEFVISION_FOLLOW_SYMLINKS=true or pass --follow-symlinks to read it)",
                )
            )
            return
        self._file(key, target, own)

    def _file(self, key: str, target: os.stat_result, own: os.stat_result) -> None:
        if not stat.S_ISREG(target.st_mode):
            detail = not_regular_detail(target.st_mode)
            self.refused.append(Refused(key, "not_a_regular_file", detail))
            return
        tag = f"{target.st_size}-{target.st_mtime_ns}"
        if own is not target:  # a link: retargeting it changes the tag too
            tag += f"-l{own.st_mtime_ns}"
        self.entries.append(ObjectInfo(key, target.st_size, tag, target.st_mtime))


def _dangling_detail(path: Path) -> str:
    try:
        return f"a symbolic link to {os.readlink(path)!r}, which does not exist"
    except OSError:  # the link itself went too
        return "a symbolic link whose target does not exist"


def _strerror(error: OSError) -> str:
    code = error.errno or 0
    if code == errno.ELOOP:
        return "a symbolic link that loops (points back to itself)"
    return f"cannot be inspected ({os.strerror(code)})"
