"""Storage contract, run against both backends (local folder and a real S3 server)."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest

from tests.conftest import S3_KEY, S3_SECRET, S3Server
from tiefvision_core.errors import StorageAuthError, StorageNotFound, StorageUnreachable
from tiefvision_core.storage.s3 import S3Store
from tiefvision_core.storage.stores import LocalStore, Store, redact_url
from tiefvision_core.storage.urls import open_store


def test_put_get_roundtrip_and_overwrite(store: Store) -> None:
    store.put_bytes("a/b/c.bin", b"one")
    assert store.get_bytes("a/b/c.bin") == b"one"
    store.put_bytes("a/b/c.bin", b"two")
    assert store.get_bytes("a/b/c.bin") == b"two"


def test_missing_object_raises_not_found(store: Store) -> None:
    with pytest.raises(StorageNotFound):
        store.get_bytes("nope/missing.bin")
    assert store.exists("nope/missing.bin") is False


def test_list_is_recursive_sorted_and_prefix_filtered(store: Store) -> None:
    for key in ["z.txt", "dir/b.txt", "dir/a.txt", "dir/sub/c.txt", "dirx/d.txt"]:
        store.put_bytes(key, key.encode())
    assert [i.key for i in store.list()] == [
        "dir/a.txt",
        "dir/b.txt",
        "dir/sub/c.txt",
        "dirx/d.txt",
        "z.txt",
    ]
    assert [i.key for i in store.list("dir/")] == ["dir/a.txt", "dir/b.txt", "dir/sub/c.txt"]
    # S3 semantics: a prefix is a string prefix
    assert [i.key for i in store.list("dir")] == [
        "dir/a.txt",
        "dir/b.txt",
        "dir/sub/c.txt",
        "dirx/d.txt",
    ]
    sizes = {i.key: i.size for i in store.list()}
    assert sizes["dir/sub/c.txt"] == len(b"dir/sub/c.txt")


def test_version_tag_changes_with_content(store: Store) -> None:
    store.put_bytes("x.bin", b"first")
    before = next(iter(store.list("x.bin"))).version_tag
    time.sleep(0.01)
    store.put_bytes("x.bin", b"second!")
    after = next(iter(store.list("x.bin"))).version_tag
    assert before and after and before != after


def test_delete_is_idempotent_and_delete_prefix_counts(store: Store) -> None:
    store.put_bytes("p/1", b"1")
    store.put_bytes("p/2", b"2")
    store.put_bytes("q/3", b"3")
    store.delete("p/1")
    store.delete("p/1")
    assert not store.exists("p/1")
    assert store.delete_prefix("p/") == 1
    assert [i.key for i in store.list()] == ["q/3"]


def test_parquet_roundtrip_and_dataset(store: Store) -> None:
    first = pa.table({"image_id": ["a", "b"], "n": [1, 2]})
    second = pa.table({"image_id": ["c"], "n": [3]})
    store.write_parquet("ds/part-0.parquet", first)
    store.write_parquet("ds/part-1.parquet", second)
    assert store.read_parquet("ds/part-0.parquet").equals(first)
    assert store.read_parquet_dataset("ds/").column("n").to_pylist() == [1, 2, 3]
    assert store.read_parquet_dataset("empty/").num_rows == 0


def test_pointer_publish_and_read(store: Store) -> None:
    assert store.read_pointer("indexes/x/CURRENT") is None
    store.publish_pointer("indexes/x/CURRENT", "v1")
    store.publish_pointer("indexes/x/CURRENT", "v2")
    assert store.read_pointer("indexes/x/CURRENT") == "v2"


@pytest.mark.parametrize("key", ["../escape", "/abs", "a/../b", "a//b", "a\\b", ""])
def test_keys_that_escape_the_root_are_refused(store: Store, key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        store.put_bytes(key, b"x")


def test_reader_never_sees_a_partial_object(store: Store) -> None:
    """A concurrent reader sees exactly one of the complete versions, every time."""
    versions = [bytes([n]) * 300_000 for n in range(1, 6)]
    store.put_bytes("big.bin", versions[0])
    seen: list[bytes] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(store.get_bytes("big.bin"))
            except Exception as exc:  # a failed read is a failure of the guarantee too
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(3):
        for data in versions:
            store.put_bytes("big.bin", data)
    stop.set()
    reader.join()
    assert not errors, errors
    assert seen, "the reader never ran"
    assert all(data in versions for data in seen)


def test_local_atomic_write_leaves_no_temporary_files(tmp_path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("a/x.bin", b"1")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.bin"]


def test_local_source_must_exist(tmp_path) -> None:
    with pytest.raises(StorageNotFound, match="does not exist"):
        open_store(str(tmp_path / "missing"), create=False)


@pytest.mark.s3
def test_unreachable_endpoint_fails_fast_without_secrets() -> None:
    started = time.monotonic()
    with pytest.raises(StorageUnreachable) as caught:
        S3Store(
            "s3://bucket/x",
            endpoint_url="http://user:pw@127.0.0.1:9",
            access_key_id="AKIDSECRET",
            secret_access_key="VERYSECRET",
        )
    assert time.monotonic() - started < 15
    message = str(caught.value)
    assert "127.0.0.1:9" in message and "ENDPOINT" in message
    for secret in ("AKIDSECRET", "VERYSECRET", "pw"):
        assert secret not in message


@pytest.mark.s3
def test_wrong_credentials_fail_with_clear_message(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    with pytest.raises(StorageAuthError) as caught:
        S3Store(
            f"s3://{bucket}",
            endpoint_url=s3_server.endpoint,
            access_key_id=S3_KEY,
            secret_access_key="WRONG-SECRET-123",
        )
    message = str(caught.value)
    assert "AWS_SECRET_ACCESS_KEY" in message
    assert "WRONG-SECRET-123" not in message and S3_KEY not in message


@pytest.mark.s3
def test_missing_bucket_says_create_it(s3_server: S3Server) -> None:
    with pytest.raises(StorageNotFound, match="create it"):
        S3Store(
            "s3://no-such-bucket",
            endpoint_url=s3_server.endpoint,
            access_key_id=S3_KEY,
            secret_access_key=S3_SECRET,
        )


@pytest.mark.s3
def test_requests_survive_a_server_restart(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    store = S3Store(
        f"s3://{bucket}/p",
        endpoint_url=s3_server.endpoint,
        access_key_id=S3_KEY,
        secret_access_key=S3_SECRET,
    )
    store.put_bytes("k", b"before")
    restart = threading.Thread(target=s3_server.restart, kwargs={"down_seconds": 1.5})
    restart.start()
    time.sleep(0.3)  # the server is down now: botocore's backoff must carry us over
    store.put_bytes("k2", b"during")
    restart.join()
    assert store.get_bytes("k") == b"before" and store.get_bytes("k2") == b"during"


@pytest.mark.s3
def test_opening_a_store_waits_out_a_server_restart(s3_server: S3Server) -> None:
    """A nightly stage that starts while the S3 server restarts (CI once saw rebuild-index
    exit 2 with "cannot reach" during a 2 s outage) opens its store once the server is
    back; an interactive store (a page someone waits on) still fails at once."""
    bucket = s3_server.new_bucket()

    def opened(**limits: float) -> S3Store:
        return S3Store(
            f"s3://{bucket}",
            endpoint_url=s3_server.endpoint,
            access_key_id=S3_KEY,
            secret_access_key=S3_SECRET,
            **limits,  # type: ignore[arg-type]
        )

    with s3_server.down(), pytest.raises(StorageUnreachable):
        opened(probe_patience=0.0)
    restart = threading.Thread(target=s3_server.restart, kwargs={"down_seconds": 2.0})
    restart.start()
    time.sleep(0.3)  # down now
    store = opened()
    restart.join()
    store.put_bytes("k", b"after the restart")
    assert store.get_bytes("k") == b"after the restart"


def test_redact_url_drops_user_info() -> None:
    assert redact_url("http://me:secret@host:9000/x") == "http://host:9000/x"
    assert redact_url("http://host:9000") == "http://host:9000"


def test_read_source_reads_regular_files_only_capped_and_checked(tmp_path) -> None:
    """What every stage reads a source photo through: special files are refused unopened
    (a FIFO would block forever), size is capped, bytes are checked against the manifest."""
    import hashlib
    import os

    from tests.guards import finishes_within
    from tiefvision_core.errors import ImageRejected
    from tiefvision_core.storage.urls import read_source

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff" + bytes(100))
    sha = hashlib.sha256(photo.read_bytes()).hexdigest()
    assert read_source(photo.as_uri(), sha256=sha) == photo.read_bytes()
    os.mkfifo(tmp_path / "fifo.jpg")
    os.symlink("loop.jpg", tmp_path / "loop.jpg")
    with open(tmp_path / "huge.jpg", "wb") as handle:
        handle.truncate(8 << 30)  # sparse: refused from its size, never read
    (tmp_path / "folder.jpg").mkdir()
    expected = {
        "fifo.jpg": "not_a_regular_file",
        "loop.jpg": "unreadable",
        "huge.jpg": "too_large",
        "folder.jpg": "not_a_regular_file",
        "/dev/zero": "not_a_regular_file",
    }

    def reasons() -> dict[str, str]:
        found = {}
        for name in expected:
            try:
                read_source(str(tmp_path / name), max_bytes=1 << 20)
            except ImageRejected as rejected:
                found[name] = rejected.reason
        return found

    assert finishes_within(30, reasons, fifos=[tmp_path / "fifo.jpg"]) == expected
    with pytest.raises(ImageRejected) as caught:
        read_source(photo.as_uri(), sha256="0" * 64)
    assert caught.value.reason == "changed_since_ingest"
    with pytest.raises(ImageRejected) as caught:
        read_source(photo.as_uri(), max_bytes=50)
    assert caught.value.reason == "too_large"
    with pytest.raises(StorageNotFound):
        read_source((tmp_path / "gone.jpg").as_uri())


def test_local_get_capped_refuses_a_fifo_in_the_store(tmp_path) -> None:
    import os

    from tests.guards import finishes_within
    from tiefvision_core.errors import ImageRejected

    store = LocalStore(tmp_path)
    os.mkfifo(tmp_path / "x.jpg")
    store.put_bytes("y.jpg", b"12345")
    assert store.get_capped("y.jpg", 5) == b"12345"
    with pytest.raises(ImageRejected, match="larger"):
        store.get_capped("y.jpg", 4)
    with pytest.raises(ImageRejected) as caught:
        finishes_within(30, lambda: store.get_capped("x.jpg", 1024), fifos=[tmp_path / "x.jpg"])
    assert caught.value.reason == "not_a_regular_file"


def test_get_capped_refuses_an_object_over_the_limit(store: Store) -> None:
    """Both backends: what ingest hashes through; S3 refuses from the object's length."""
    from tiefvision_core.errors import ImageRejected

    store.put_bytes("photos/p.jpg", b"x" * 2000)
    assert store.get_capped("photos/p.jpg", 2000) == b"x" * 2000
    with pytest.raises(ImageRejected) as caught:
        store.get_capped("photos/p.jpg", 1999)
    assert caught.value.reason == "too_large"
    with pytest.raises(StorageNotFound):
        store.get_capped("photos/missing.jpg", 2000)
