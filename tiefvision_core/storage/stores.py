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
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import io
import os
import posixpath
import stat
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import urlparse, urlunparse

import pyarrow as pa
import pyarrow.parquet as pq

from tiefvision_core.config import Settings, load_settings, normalise_store_url
from tiefvision_core.errors import (
    ImageRejected,
    StorageAuthError,
    StorageError,
    StorageNotFound,
    StorageUnreachable,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "INTERACTIVE",
    "LocalStore",
    "ObjectInfo",
    "S3Store",
    "Store",
    "open_store",
    "read_object",
    "read_source",
    "redact_url",
]

_TMP_PREFIX = ".tmp-"
#: Largest source photo read (see ``Settings.max_image_bytes``): a link to ``/dev/zero``
#: named ``.jpg`` must end as a reject, not a ``MemoryError``.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
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


def _check_key(key: str) -> str:
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
        return self.root / _check_key(key)

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
        return _read_local_regular(self._path(key), max_bytes)

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


class S3Store(Store):
    """A bucket (and optional prefix) on AWS S3, MinIO or any S3-compatible server.

    ``max_attempts``, ``connect_timeout`` and ``read_timeout`` (seconds) shape the work
    client: the defaults suit a batch stage that would rather wait out a blip than fail a
    run; :data:`INTERACTIVE` holds the impatient values a person waiting on a page needs.
    ``probe_patience`` (seconds) is how long the opening check keeps retrying an endpoint
    that does not answer: a server restarting as a nightly stage starts (a MinIO upgrade, a
    pod rescheduled) is waited out, while a wrong endpoint still fails within seconds.
    Refused credentials and missing buckets fail at once: waiting cannot fix them.
    """

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str = "us-east-1",
        max_attempts: int = 8,
        check: bool = True,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        probe_patience: float = 8.0,
    ) -> None:
        import boto3
        from botocore.config import Config

        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageError(f"{url!r} is not an s3://BUCKET[/PREFIX] URL")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.endpoint = redact_url(endpoint_url) if endpoint_url else "AWS S3"
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )

        def client(attempts: int, connect_timeout: float) -> object:
            return session.client(
                "s3",
                endpoint_url=endpoint_url,
                config=Config(
                    retries={"max_attempts": attempts, "mode": "standard"},
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout,
                    s3={"addressing_style": "path"},
                    signature_version="s3v4",
                    response_checksum_validation="when_required",
                ),
            )

        # Work client: patient (standard mode retries connection errors, throttling and 5xx
        # with exponential backoff). Probe client: short attempts, retried by ``_check`` for
        # ``probe_patience`` seconds, so a restart is waited out and a wrong endpoint fails
        # after that bound rather than after the work client's minutes of retries.
        self._client = client(max_attempts, connect_timeout)
        if check:
            self._check(client(2, min(2.0, connect_timeout)), probe_patience)

    def _check(self, probe: Any, patience: float) -> None:  # probe: a boto3 S3 client
        """One listing; an unreachable endpoint is retried until ``patience`` runs out."""
        deadline = time.monotonic() + patience
        pause = 0.25
        while True:
            try:
                probe.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
                return
            except Exception as exc:
                error = self._translate(exc, self.url)
            left = deadline - time.monotonic()
            if not isinstance(error, StorageUnreachable) or left <= 0:
                raise error
            time.sleep(min(pause, left))
            pause = min(pause * 2, 2.0)

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    def _translate(self, exc: Exception, what: str) -> StorageError:
        """Map boto errors to our types with messages that never include credentials."""
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        where = f"{what} at {self.endpoint}"
        if isinstance(exc, NoCredentialsError):
            return StorageAuthError(
                f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                return StorageNotFound(f"{what} does not exist")
            if code == "NoSuchBucket":
                return StorageNotFound(
                    f"bucket {self.bucket!r} does not exist at {self.endpoint}: create it first"
                )
            if code in (
                "SignatureDoesNotMatch",
                "InvalidAccessKeyId",
                "AccessDenied",
                "403",
                "InvalidToken",
                "ExpiredToken",
            ):
                return StorageAuthError(
                    f"S3 refused the credentials for {where} ({code}): check AWS_ACCESS_KEY_ID "
                    "and AWS_SECRET_ACCESS_KEY, and that they may access the bucket"
                )
            return StorageError(f"S3 error {code} for {where}")
        if isinstance(exc, EndpointConnectionError) or "Connect" in type(exc).__name__:
            return StorageUnreachable(
                f"cannot reach the S3 endpoint {self.endpoint}: check TIEFVISION_S3_ENDPOINT_URL "
                "and that the server is running"
            )
        return StorageError(f"S3 request for {where} failed ({type(exc).__name__})")

    def _call(self, what: str, method: str, **kwargs: object) -> dict:
        try:
            return getattr(self._client, method)(**kwargs)
        except Exception as exc:
            raise self._translate(exc, what) from None

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(self.uri(key), "put_object", Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        response = self._call(self.uri(key), "get_object", Bucket=self.bucket, Key=self._key(key))
        try:
            return response["Body"].read()
        except Exception as exc:  # connection dropped mid-body: retry once, then report
            try:
                again = self._call(
                    self.uri(key), "get_object", Bucket=self.bucket, Key=self._key(key)
                )
                return again["Body"].read()
            except Exception:
                raise self._translate(exc, self.uri(key)) from None

    def get_capped(self, key: str, max_bytes: int) -> bytes:
        """One object, refused (``too_large``) from its length before the body is read."""
        what = self.uri(key)
        response = self._call(what, "get_object", Bucket=self.bucket, Key=self._key(key))
        body = response["Body"]
        try:
            if int(response.get("ContentLength") or 0) > max_bytes:
                raise ImageRejected(
                    "too_large", f"the object is larger than the {max_bytes:,}-byte limit"
                )
            return _read_capped(body, max_bytes, "the object")
        except ImageRejected:
            raise
        except Exception as exc:
            raise self._translate(exc, what) from None
        finally:
            body.close()

    def read_parquet(self, key: str, columns: list[str] | None = None) -> pa.Table:
        """With ``columns``: ranged GETs for the footer and those columns only (a shard's
        key columns without its vectors); without: one GET of the whole object."""
        if columns is None:
            return super().read_parquet(key)
        head = self._call(self.uri(key), "head_object", Bucket=self.bucket, Key=self._key(key))
        reader = _RangeReader(self, key, int(head["ContentLength"]))
        with pq.ParquetFile(reader) as parquet:
            return parquet.read(columns=columns)

    def _get_range(self, key: str, start: int, stop: int) -> bytes:
        response = self._call(
            self.uri(key),
            "get_object",
            Bucket=self.bucket,
            Key=self._key(key),
            Range=f"bytes={start}-{stop - 1}",
        )
        return response["Body"].read()

    def _put_new(self, key: str, data: bytes) -> bool:
        """A conditional PUT (``If-None-Match: *``): atomic on AWS S3 and MinIO; servers that
        ignore the condition (rclone's) are covered by :meth:`put_if_absent`'s read-back."""
        return self._conditional("put_object", key, Body=data, IfNoneMatch="*")

    def _get_tagged(self, key: str) -> tuple[bytes, str | None] | None:
        try:
            response = self._call(
                self.uri(key), "get_object", Bucket=self.bucket, Key=self._key(key)
            )
            return response["Body"].read(), response.get("ETag")
        except StorageNotFound:
            return None

    def _conditional(self, method: str, key: str, **kwargs: object) -> bool:
        """One request with a precondition; False when the server refused it (412, or 409
        for a concurrent conflicting write)."""
        from botocore.exceptions import ClientError

        try:
            getattr(self._client, method)(Bucket=self.bucket, Key=self._key(key), **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise self._translate(exc, self.uri(key)) from None
        except Exception as exc:
            raise self._translate(exc, self.uri(key)) from None
        return True

    def _put_matching(self, key: str, data: bytes, tag: str | None) -> bool:
        """``If-Match: <ETag read>``: atomic on AWS S3 and MinIO; rclone ignores it, which
        :meth:`replace_if`'s read-back covers."""
        return self._conditional("put_object", key, Body=data, **({"IfMatch": tag} if tag else {}))

    def _delete_matching(self, key: str, tag: str | None) -> bool:
        """``If-Match`` on DeleteObject (AWS S3 general purpose buckets, Ceph); a server that
        ignores it leaves :meth:`delete_if`'s residual window."""
        return self._conditional("delete_object", key, **({"IfMatch": tag} if tag else {}))

    def exists(self, key: str) -> bool:
        try:
            self._call(self.uri(key), "head_object", Bucket=self.bucket, Key=self._key(key))
        except StorageNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        token: str | None = None
        while True:
            kwargs: dict[str, object] = {"Bucket": self.bucket, "Prefix": full}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(self.uri(prefix), "list_objects_v2", **kwargs)
            for item in page.get("Contents", []):
                key = self._relative(item["Key"])
                if key.endswith("/") or posixpath.basename(key).startswith("."):
                    continue
                modified = item.get("LastModified")
                yield ObjectInfo(
                    key,
                    int(item["Size"]),
                    str(item.get("ETag", "")).strip('"'),
                    modified.timestamp() if modified is not None else None,
                )
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    def delete(self, key: str) -> None:
        self._call(self.uri(key), "delete_object", Bucket=self.bucket, Key=self._key(key))

    def uri(self, key: str = "") -> str:
        return f"{self.url}/{key}" if key else self.url


class _RangeReader(io.RawIOBase):
    """A read-only, seekable file over one S3 object: each read is one ranged GET (Parquet
    reads its footer, then the column chunks it needs)."""

    def __init__(self, store: S3Store, key: str, size: int) -> None:
        super().__init__()
        self._store, self._key, self._size, self._pos = store, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        stop = min(self._size, self._pos + len(buffer))
        if stop <= self._pos:
            return 0
        data = self._store._get_range(self._key, self._pos, stop)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _read_capped(stream, max_bytes: int, what: str) -> bytes:
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


def _read_local_regular(path: Path, max_bytes: int) -> bytes:
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
        return _read_capped(handle, max_bytes, "the file")


def read_source(
    uri: str,
    *,
    sha256: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    settings: Settings | None = None,
    interactive: bool = False,
) -> bytes:
    """The bytes of a source photo as ingest recorded it, or a reject.

    What every stage and the web service call instead of reading a source URI directly: a
    source is trusted only as far as its manifest row. Raises :class:`ImageRejected` with
    ``not_a_regular_file``, ``unreadable``, ``too_large`` or (when ``sha256`` is given and
    the bytes differ) ``changed_since_ingest``; :class:`StorageNotFound` when it is gone.
    ``interactive``: S3 sources through an impatient client (see :func:`open_store`).
    """
    from urllib.parse import unquote

    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        root = f"s3://{parsed.netloc}"
        cache_key = (os.getpid(), root + ("#interactive" if interactive else ""))
        if cache_key not in _OBJECT_STORES:
            _OBJECT_STORES[cache_key] = open_store(root, settings, interactive=interactive)
        store = _OBJECT_STORES[cache_key]
        assert isinstance(store, S3Store)
        data = store.get_capped(parsed.path.lstrip("/"), max_bytes)
    else:
        path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)
        data = _read_local_regular(path, max_bytes)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ImageRejected(
            "changed_since_ingest",
            "the bytes differ from the manifest: rerun `tiefvision ingest` for this catalog",
        )
    return data


#: S3 client options for a request a person waits on (the web service): during an outage
#: an answer within a few seconds beats minutes of retries; two attempts still ride out a
#: dropped connection.
class _ClientLimits(TypedDict, total=False):
    """Keyword arguments of :class:`S3Store` that bound how long one request may take."""

    max_attempts: int
    connect_timeout: float
    read_timeout: float
    probe_patience: float


INTERACTIVE: _ClientLimits = {
    "max_attempts": 2,
    "connect_timeout": 1.0,
    "read_timeout": 2.0,
    "probe_patience": 0.0,
}


def open_store(
    url: str,
    settings: Settings | None = None,
    *,
    create: bool = True,
    interactive: bool = False,
) -> Store:
    """Open the store at ``url`` (``file://``, ``s3://`` or a plain path).

    S3 endpoint and credentials come from ``settings`` (or the environment when not given).
    ``create=False`` is for *sources* the user names: a missing folder is an error, not a
    new empty catalog. ``interactive=True``: an S3 client with :data:`INTERACTIVE` timeouts
    and attempts (no effect on a local store).
    """
    settings = settings or load_settings()
    normal = normalise_store_url(url)
    if normal.startswith("s3://"):
        secret = settings.aws_secret_access_key
        key_id = settings.aws_access_key_id
        return S3Store(
            normal,
            endpoint_url=settings.s3_endpoint_url,
            access_key_id=key_id.get_secret_value() if key_id else None,
            secret_access_key=secret.get_secret_value() if secret else None,
            region=settings.aws_region,
            **(INTERACTIVE if interactive else {}),
        )
    return LocalStore(Path(urlparse(normal).path), create=create)


_OBJECT_STORES: dict[tuple[int, str], Store] = {}


def read_object(uri: str, settings: Settings | None = None) -> bytes:
    """Read one object by its full URI, as recorded in the manifest's ``source_uri``.

    Used by decoding workers, which may be forked processes: stores are cached per process
    (a boto3 client must not cross a fork). Raises :class:`StorageNotFound` when it is gone.
    """
    from urllib.parse import unquote

    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        root = f"s3://{parsed.netloc}"
        key = (os.getpid(), root)
        if key not in _OBJECT_STORES:
            _OBJECT_STORES[key] = open_store(root, settings)
        return _OBJECT_STORES[key].get_bytes(parsed.path.lstrip("/"))
    path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise StorageNotFound(f"{uri} does not exist") from None
