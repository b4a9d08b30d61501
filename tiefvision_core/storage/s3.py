"""S3-compatible object storage (AWS S3, MinIO, rclone …) behind the :class:`Store`
interface: a patient work client for batch stages, the impatient limits a person waiting on
a page needs (:data:`INTERACTIVE`), ranged reads for Parquet footers and columns.

Errors name the endpoint (user-info stripped) and the bucket, never a key; refused
credentials and a missing bucket fail at open, an endpoint that does not answer is retried
for a bounded time (a restart waited out).
"""

from __future__ import annotations

import io
import posixpath
import time
from collections.abc import Iterator
from typing import Any, TypedDict
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from tiefvision_core.errors import (
    ImageRejected,
    StorageAuthError,
    StorageError,
    StorageNotFound,
    StorageUnreachable,
)
from tiefvision_core.storage.stores import ObjectInfo, Store, check_key, read_capped, redact_url

__all__ = ["INTERACTIVE", "S3Store"]


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
        check_key(key)
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
            return read_capped(body, max_bytes, "the object")
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
