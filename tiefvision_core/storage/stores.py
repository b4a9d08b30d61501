"""One storage interface over a local directory and S3-compatible object storage.

Why an interface of our own rather than raw boto3 or pyarrow.fs everywhere: every stage
needs the same three guarantees, and they differ by backend —

* **atomic publish**: a reader never sees a half-written object. Locally that is a write to
  a hidden temporary file in the same directory plus ``os.replace``; on S3 a single PUT is
  already all-or-nothing.
* **transient errors retried** with backoff (botocore's standard retry mode), while a wrong
  endpoint or wrong credentials fail *fast* at open with a message that says what to fix.
* **credentials never in messages**: errors name the endpoint (with any user-info
  stripped) and the bucket, never a key.

Keys are always relative to the store root and use forward slashes.

The interface and the local backend live here; S3 is :mod:`tiefvision_core.storage.s3`,
and what a URL names (a store, one object, a source photo) is opened and read by
:mod:`tiefvision_core.storage.urls`.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import io
import os
import stat
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pyarrow as pa
import pyarrow.parquet as pq

from tiefvision_core.errors import ImageRejected, StorageNotFound

__all__ = [
    "LocalStore",
    "ObjectInfo",
    "Store",
    "check_key",
    "not_regular_detail",
    "read_capped",
    "read_local_file",
    "redact_url",
]

_TMP_PREFIX = ".tmp-"
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object. ``version_tag`` changes whenever the content may have changed
    (local: size + mtime in ns; S3: the ETag), so incremental stages can skip re-reading."""

    key: str
    size: int
    version_tag: str
    modified: float | None = None  # POSIX seconds (age checks such as gc's grace period)


def redact_url(url: str) -> str:
    """Drop user-info (``user:password@``) from a URL before it goes into any message."""
    parsed = urlparse(url)
    if parsed.username is None and parsed.password is None:
        return url
    host = parsed.hostname or ""
    if parsed.port:
        host = f"{host}:{parsed.port}"
    return urlunparse(parsed._replace(netloc=host))


def check_key(key: str) -> str:
    """Refuse keys that could escape the root (``..``) or are absolute."""
    if not key or key.startswith("/") or "\\" in key:
        raise ValueError(f"invalid storage key {key!r}")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts[:-1]) or parts[-1] in (".", ".."):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class Store(ABC):
    """Object storage rooted at ``url``. Subclasses implement the byte-level primitives;
    Parquet and pointer helpers are shared so both backends behave the same."""

    url: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically (all or nothing, last writer wins)."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read a whole object; :class:`StorageNotFound` if absent."""

    def get_capped(self, key: str, max_bytes: int) -> bytes:
        """A source photo: at most ``max_bytes`` (``ImageRejected("too_large")`` beyond).

        Backends override this to refuse before reading: what ingest hashes through, so a
        huge or endless object never lands in memory whole.
        """
        data = self.get_bytes(key)
        if len(data) > max_bytes:
            raise ImageRejected("too_large", f"larger than the {max_bytes:,}-byte limit")
        return data

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` (recursive), sorted by key; temporary files hidden."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; absent objects are fine (idempotent)."""

    @abstractmethod
    def uri(self, key: str = "") -> str:
        """A full URI for ``key`` (for records and messages)."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove everything under ``prefix``; returns how many objects went."""
        keys = [info.key for info in self.list(prefix)]
        for key in keys:
            self.delete(key)
        return len(keys)

    # -- Parquet -------------------------------------------------------------------------
    def write_parquet(
        self,
        key: str,
        table: pa.Table,
        *,
        compression: str = "zstd",
        plain_columns: tuple[str, ...] = (),
    ) -> None:
        """Serialise in memory and publish atomically: readers see the old file or the new.

        ``plain_columns`` get neither dictionary encoding nor statistics: for a column of
        millions of floats (feature vectors) both are useless and cost 4× the write time.
        """
        sink = io.BytesIO()
        others = [name for name in table.column_names if name not in plain_columns]
        pq.write_table(
            table,
            sink,
            compression=compression,
            use_dictionary=others if plain_columns else True,
            write_statistics=others if plain_columns else True,
        )
        self.put_bytes(key, sink.getvalue())

    # builtins.list: inside this class, `list` names the method above.
    def read_parquet(self, key: str, columns: builtins.list[str] | None = None) -> pa.Table:
        return pq.read_table(pa.BufferReader(self.get_bytes(key)), columns=columns)

    def read_parquet_dataset(
        self, prefix: str, columns: builtins.list[str] | None = None
    ) -> pa.Table:
        """All ``*.parquet`` under ``prefix`` as one table (empty table if none)."""
        tables = [
            self.read_parquet(info.key, columns)
            for info in self.list(prefix)
            if info.key.endswith(".parquet")
        ]
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="default")

    # -- pointers (CURRENT files) ----------------------------------------------------------
    def publish_pointer(self, key: str, value: str) -> None:
        """Switch a pointer such as ``indexes/<space>/CURRENT`` atomically."""
        self.put_bytes(key, value.encode("utf-8"))

    def read_pointer(self, key: str) -> str | None:
        """The pointer's value, or ``None`` when it was never published."""
        try:
            return self.get_bytes(key).decode("utf-8").strip()
        except StorageNotFound:
            return None

    # -- exclusive create (locks) -----------------------------------------------------------
    def put_if_absent(self, key: str, data: bytes, *, settle_s: float = 1.0) -> bool:
        """Create ``key`` only when no object is there; True when this call created it.

        ``data`` must be unique to the caller (a lock holder's token). The protocol for
        backends without an atomic create: look, write, wait ``settle_s``, read back. Two
        callers that both looked before either wrote both read back the later write, so
        exactly one keeps it, provided look-to-write takes less than ``settle_s`` (reads
        after writes are consistent on S3 and MinIO).
        """
        if self.exists(key) or not self._put_new(key, data):
            return False
        time.sleep(settle_s)
        try:
            return self.get_bytes(key) == data
        except StorageNotFound:
            return False

    def _put_new(self, key: str, data: bytes) -> bool:
        """The write of :meth:`put_if_absent`; False when the backend refused (key exists)."""
        self.put_bytes(key, data)
        return True

    # -- compare-and-swap (lock heartbeats, takeovers and releases) -------------------------
    def replace_if(self, key: str, expected: bytes, data: bytes, *, settle_s: float = 1.0) -> bool:
        """Overwrite ``key`` with ``data`` only while it holds ``expected``; True when this
        call replaced it (False when absent or different).

        ``data`` must be unique to the caller, as for :meth:`put_if_absent`. The protocol for
        backends without an atomic compare-and-swap: read and compare, a write conditional
        on the version read (:meth:`_put_matching`; honoured by AWS S3 and MinIO, ignored by
        rclone), wait ``settle_s``, read back. Two callers that both read ``expected`` before
        either wrote both read back the later write, so exactly one keeps it, provided
        read-to-write takes less than ``settle_s``.
        """
        found = self._get_tagged(key)
        if found is None or found[0] != expected or not self._put_matching(key, data, found[1]):
            return False
        time.sleep(settle_s)
        found = self._get_tagged(key)
        return found is not None and found[0] == data

    def delete_if(self, key: str, expected: bytes) -> bool:
        """Delete ``key`` only while it holds ``expected``; True when this call deleted it.

        Where the backend ignores the condition (:meth:`_delete_matching`), the compare and
        the delete are two requests and a write landing between them is deleted too: the
        residual window, as long as one round trip."""
        found = self._get_tagged(key)
        if found is None or found[0] != expected:
            return False
        return self._delete_matching(key, found[1])

    def _get_tagged(self, key: str) -> tuple[bytes, str | None] | None:
        """An object and the version tag a conditional request can name; None if absent."""
        try:
            return self.get_bytes(key), None
        except StorageNotFound:
            return None

    def _put_matching(self, key: str, data: bytes, tag: str | None) -> bool:
        """The write of :meth:`replace_if`; False when the backend refused (``tag`` is old)."""
        self.put_bytes(key, data)
        return True

    def _delete_matching(self, key: str, tag: str | None) -> bool:
        """The delete of :meth:`delete_if`; False when the backend refused (``tag`` is old)."""
        self.delete(key)
        return True


class LocalStore(Store):
    """A directory on local disk: the embedded default, and any local source folder."""

    def __init__(self, root: str | Path, *, create: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.root.is_dir():
            raise StorageNotFound(f"folder {self.root} does not exist: check the path")
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _write_temp(self, path: Path, data: bytes) -> Path:
        """``data`` durably in a hidden temporary file beside ``path``, for a rename or
        link into place: a reader never sees a half-written ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise StorageNotFound(f"{self.uri(key)} does not exist") from None

    def get_capped(self, key: str, max_bytes: int) -> bytes:
        """Regular files only (a FIFO or device is refused unopened), at most ``max_bytes``."""
        return read_local_file(self._path(key), max_bytes)

    def read_parquet(self, key: str, columns: list[str] | None = None) -> pa.Table:
        """Straight from the file: only the footer and the wanted columns are read (a
        shard's key columns without its vectors)."""
        try:
            with pq.ParquetFile(self._path(key)) as parquet:
                return parquet.read(columns=columns)
        except (FileNotFoundError, IsADirectoryError):
            raise StorageNotFound(f"{self.uri(key)} does not exist") from None

    def put_if_absent(self, key: str, data: bytes, *, settle_s: float = 1.0) -> bool:
        """Atomic: the complete file is hard-linked into place, which fails if one is there."""
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    @contextmanager
    def _exclusive(self, path: Path) -> Iterator[None]:
        """An exclusive ``flock`` on a hidden sidecar of ``path``: every compare-and-swap of
        one key on this machine's processes runs one at a time (writers that bypass it —
        plain puts and deletes — are not ordered; the lock protocol uses none)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(f".{path.name}.cas"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def _if_holds(self, key: str, expected: bytes, action: Callable[[Path], None]) -> bool:
        """``action`` on the file of ``key`` only while it holds ``expected``, compared and
        done under :meth:`_exclusive`; False (nothing done) when it holds something else."""
        path = self._path(key)
        with self._exclusive(path):
            try:
                if path.read_bytes() != expected:
                    return False
            except (FileNotFoundError, IsADirectoryError):
                return False
            action(path)
        return True

    def replace_if(self, key: str, expected: bytes, data: bytes, *, settle_s: float = 1.0) -> bool:
        """Atomic: compare and ``os.replace`` under :meth:`_exclusive` (no settle wait)."""
        return self._if_holds(key, expected, lambda _path: self.put_bytes(key, data))

    def delete_if(self, key: str, expected: bytes) -> bool:
        """Atomic: compare and unlink under :meth:`_exclusive`."""
        return self._if_holds(key, expected, lambda path: path.unlink(missing_ok=True))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # S3 semantics: a prefix is a string prefix, so "a/b" also matches "a/bc"; walk the
        # deepest folder that can hold every match and filter by key below.
        if not prefix or prefix.endswith("/"):
            base = self.root / prefix
        else:
            base = (self.root / prefix).parent
        if not base.is_dir():
            return
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    stat = path.stat()
                except OSError:  # removed while listing, or a link that loops (ELOOP)
                    continue
                found.append(
                    ObjectInfo(
                        key, stat.st_size, f"{stat.st_size}-{stat.st_mtime_ns}", stat.st_mtime
                    )
                )
        yield from sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        """As on S3, a prefix whose objects are gone is gone: folders emptied by the delete
        are removed too (a pruned version must not leave an empty folder behind)."""
        removed = super().delete_prefix(prefix)
        if removed:
            base = self.root / prefix if prefix.endswith("/") else (self.root / prefix).parent
            for dirpath, _, _ in sorted(os.walk(base), key=lambda w: -len(w[0])):
                folder = Path(dirpath)
                # Another writer pruning the same prefix may have removed it meanwhile.
                with contextlib.suppress(FileNotFoundError):
                    if folder != self.root and not any(folder.iterdir()):
                        folder.rmdir()
        return removed

    def uri(self, key: str = "") -> str:
        return (self.root / key).as_uri() if key else self.url

    def local_path(self, key: str) -> Path:
        """The file behind ``key``; only local stores have one."""
        return self._path(key)


def read_capped(stream, max_bytes: int, what: str) -> bytes:
    """At most ``max_bytes`` from ``stream``, read in chunks: one byte more is a reject."""
    parts: list[bytes] = []
    total = 0
    while True:
        part = stream.read(min(_READ_CHUNK, max_bytes + 1 - total))
        if not part:
            return b"".join(parts)
        parts.append(part)
        total += len(part)
        if total > max_bytes:
            raise ImageRejected("too_large", f"{what} is larger than the {max_bytes:,}-byte limit")


def not_regular_detail(mode: int) -> str:
    """What a non-regular file is, for a reject's detail (``not_a_regular_file``)."""
    if stat.S_ISFIFO(mode):
        kind = "a FIFO"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    else:
        kind = "not a file"
    return f"{kind}, not a regular file: never read"


def read_local_file(path: Path, max_bytes: int) -> bytes:
    """A regular file only: FIFOs, devices and sockets are refused before any read.

    ``O_NONBLOCK`` makes the open itself return at once for a FIFO with no writer (a plain
    open would wait forever, and SIGTERM would not stop it); ``fstat`` of the open handle,
    not of the path, decides, so a swap between check and read cannot slip a device in.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise StorageNotFound(f"{path.as_uri()} does not exist") from None
    except IsADirectoryError:
        raise ImageRejected("not_a_regular_file", "a folder, not a file") from None
    except OSError as error:  # ELOOP (a link to itself), EACCES, ENXIO (socket)
        raise ImageRejected(
            "unreadable", f"the file cannot be opened ({os.strerror(error.errno or 0)})"
        ) from None
    try:
        handle = os.fdopen(fd, "rb", buffering=0)
    except IsADirectoryError:  # Linux opens a folder read-only; only fdopen refuses it
        os.close(fd)
        raise ImageRejected("not_a_regular_file", "a folder, not a file") from None
    with handle:
        info = os.fstat(fd)
        mode = info.st_mode
        if stat.S_ISREG(mode) and info.st_size > max_bytes:  # refused without reading
            raise ImageRejected(
                "too_large",
                f"the file has {info.st_size:,} bytes, larger than the {max_bytes:,}-byte limit",
            )
        if not stat.S_ISREG(mode):
            raise ImageRejected("not_a_regular_file", not_regular_detail(mode))
        os.set_blocking(fd, True)
        return read_capped(handle, max_bytes, "the file")
