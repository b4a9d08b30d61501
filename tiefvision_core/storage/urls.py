"""What a URL names: the store at a URL (:func:`open_store`), one object by its full URI
(:func:`read_object`), a source photo as ingest recorded it (:func:`read_source`).

``file://`` URLs and plain paths name a local folder (:class:`LocalStore`), ``s3://`` ones
a bucket (:class:`S3Store`); the S3 stores behind object reads are cached per process (a
boto3 client must not cross a fork).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlparse

from tiefvision_core.config import Settings, load_settings, normalise_store_url
from tiefvision_core.errors import ImageRejected, StorageNotFound
from tiefvision_core.storage.s3 import INTERACTIVE, S3Store
from tiefvision_core.storage.stores import LocalStore, Store, read_local_file

__all__ = ["DEFAULT_MAX_BYTES", "open_store", "read_object", "read_source"]

#: Largest source photo read (see ``Settings.max_image_bytes``): a link to ``/dev/zero``
#: named ``.jpg`` must end as a reject, not a ``MemoryError``.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


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
        data = read_local_file(path, max_bytes)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ImageRejected(
            "changed_since_ingest",
            "the bytes differ from the manifest: rerun `tiefvision ingest` for this catalog",
        )
    return data


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
