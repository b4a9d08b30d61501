"""Catalog ingest core: ids, incremental semantics, metadata, rejects, versions."""

from __future__ import annotations

import contextlib
import io
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.guards import finishes_within
from tiefvision_core.catalog import ingest
from tiefvision_core.catalog.boxes import as_box
from tiefvision_core.catalog.ingest import ingest_catalog
from tiefvision_core.catalog.manifest import image_id_for, read_manifest, read_rejects
from tiefvision_core.errors import InputError
from tiefvision_core.storage import layout
from tiefvision_core.storage.stores import LocalStore


def _jpeg(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for i, name in enumerate(["a/one.jpg", "a/two.jpg", "b/three.jpg", "four.jpg"]):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_jpeg((40 * i, 100, 200)))
    return root


@pytest.fixture
def stores(source_dir: Path, tmp_path: Path) -> tuple[LocalStore, LocalStore]:
    return LocalStore(source_dir, create=False), LocalStore(tmp_path / "store")


def _rows(store: LocalStore) -> dict[str, dict]:
    return {row["rel_path"]: row for row in read_manifest(store).to_pylist()}


@pytest.mark.parametrize(
    "path", ["a/b c.jpg", "a/b_c.jpg", "../../etc/passwd", "robe-été-ドレス.jpg", "x/../y.jpg"]
)
def test_image_id_is_url_safe_and_stable(path: str) -> None:
    image_id = image_id_for(path)
    assert image_id == image_id_for(path)
    assert "/" not in image_id and ".." not in image_id
    assert all(ch.isalnum() or ch in "._-" for ch in image_id)


def test_image_ids_do_not_collide_when_slugs_do() -> None:
    assert image_id_for("a/b c.jpg") != image_id_for("a/b-c.jpg")
    assert image_id_for("été.jpg") != image_id_for("ete.jpg")


def test_first_ingest_records_every_image(stores) -> None:
    source, store = stores
    summary = ingest_catalog(source, store, chunk_size=3)
    assert (summary.images, summary.new, summary.changed, summary.removed) == (4, 4, 0, 0)
    rows = _rows(store)
    assert set(rows) == {"a/one.jpg", "a/two.jpg", "b/three.jpg", "four.jpg"}
    one = rows["a/one.jpg"]
    assert (one["width"], one["height"], one["format"], one["status"]) == (40, 30, "JPEG", "ok")
    assert len(one["sha256"]) == 64 and one["bytes"] > 0
    assert one["source_uri"].startswith("file://") and one["source_uri"].endswith("a/one.jpg")
    assert not list(store.list(layout.STAGING_PREFIX)), "staging is cleared after publish"


def test_rerun_reports_nothing_new_and_reads_nothing(stores, monkeypatch) -> None:
    source, store = stores
    first = ingest_catalog(source, store)
    reads: list[str] = []
    original = source.get_capped
    monkeypatch.setattr(
        source, "get_capped", lambda key, cap: reads.append(key) or original(key, cap)
    )
    second = ingest_catalog(source, store)
    assert (second.new, second.changed, second.removed, second.rejected) == (0, 0, 0, 0)
    assert second.unchanged == 4 and second.previous_version == first.version
    assert reads == [], "unchanged files (same size and mtime) are not read again"


def test_touched_but_identical_file_is_hashed_not_decoded(stores, source_dir, monkeypatch) -> None:
    source, store = stores
    ingest_catalog(source, store)
    path = source_dir / "four.jpg"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10_000_000))
    decoded: list[int] = []
    original = ingest.inspect_image
    monkeypatch.setattr(
        ingest, "inspect_image", lambda data, **kw: decoded.append(1) or original(data, **kw)
    )
    summary = ingest_catalog(source, store)
    assert (summary.new, summary.changed, summary.unchanged) == (0, 0, 4)
    assert decoded == []


def test_delete_and_corrupt_give_one_removed_one_rejected(stores, source_dir) -> None:
    source, store = stores
    ingest_catalog(source, store)
    (source_dir / "a" / "two.jpg").unlink()
    corrupt = source_dir / "b" / "three.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    summary = ingest_catalog(source, store)
    assert (summary.new, summary.changed, summary.removed, summary.rejected) == (0, 0, 1, 1)
    assert summary.unchanged == 2 and summary.images == 2
    rows = _rows(store)
    assert rows["a/two.jpg"]["status"] == "removed"
    assert rows["b/three.jpg"]["status"] == "rejected"
    assert rows["b/three.jpg"]["reason"] == "truncated"
    rejects = read_rejects(store).to_pylist()
    assert [(r["rel_path"], r["reason"]) for r in rejects] == [("b/three.jpg", "truncated")]
    # the next run: nothing changes, the removed image stays removed, counted once
    again = ingest_catalog(source, store)
    assert (again.removed, again.rejected, again.rejects_total) == (0, 0, 1)


def test_changed_image_is_flagged_with_new_hash(stores, source_dir) -> None:
    source, store = stores
    ingest_catalog(source, store)
    before = _rows(store)["four.jpg"]["sha256"]
    (source_dir / "four.jpg").write_bytes(_jpeg((1, 2, 3), size=(50, 60)))
    summary = ingest_catalog(source, store)
    row = _rows(store)["four.jpg"]
    assert summary.changed == 1 and row["change"] == "changed"
    assert row["sha256"] != before and (row["width"], row["height"]) == (50, 60)


def test_removed_image_that_returns_is_new_again(stores, source_dir) -> None:
    source, store = stores
    ingest_catalog(source, store)
    data = (source_dir / "four.jpg").read_bytes()
    (source_dir / "four.jpg").unlink()
    ingest_catalog(source, store)
    (source_dir / "four.jpg").write_bytes(data)
    summary = ingest_catalog(source, store)
    row = _rows(store)["four.jpg"]
    assert summary.new == 1 and (row["status"], row["change"]) == ("ok", "new")


def test_metadata_joins_by_path_then_file_name(stores, tmp_path) -> None:
    source, store = stores
    meta = tmp_path / "products.csv"
    meta.write_text(
        "image,product_id,category\n"
        "a/one.jpg,p1,dress\n"
        "two.jpg,p1,dress\n"  # by file name: unique in the catalog
        "b/three.jpg,p2,skirt\n"
    )
    ingest_catalog(source, store, metadata=meta)
    rows = _rows(store)
    assert rows["a/one.jpg"]["product_id"] == "p1"
    assert rows["a/two.jpg"]["product_id"] == "p1"
    assert rows["b/three.jpg"]["category"] == "skirt"
    assert rows["four.jpg"]["product_id"] is None
    # a later run without --metadata keeps what the manifest knew
    ingest_catalog(source, store)
    assert _rows(store)["b/three.jpg"]["category"] == "skirt"


def test_metadata_without_key_column_is_refused(tmp_path) -> None:
    meta = tmp_path / "m.csv"
    meta.write_text("sku,product_id\nx,1\n")
    with pytest.raises(InputError, match="no key column"):
        ingest.load_metadata(meta)
    meta.write_text("image,status\nx,1\n")
    with pytest.raises(InputError, match="reserved"):
        ingest.load_metadata(meta)


def test_killed_run_resumes_from_staged_chunks(stores, monkeypatch) -> None:
    source, store = stores
    plan = ingest.plan_ingest(source, store, chunk_size=1)
    assert len(plan.chunks) == 4
    first_key = ingest.stage_chunk(source, store, plan.chunks[0])  # then the run "dies"
    assert read_manifest(store) is None, "nothing is published before the run finishes"

    inspected: list[str] = []
    original = ingest.inspect_chunk
    monkeypatch.setattr(
        ingest,
        "inspect_chunk",
        lambda src, chunk, **kw: inspected.append(chunk.staging_key) or original(src, chunk, **kw),
    )
    summary = ingest_catalog(source, store, chunk_size=1)
    assert first_key not in inspected and len(inspected) == 3
    assert summary.new == 4 and len(_rows(store)) == 4


def test_old_versions_are_pruned_and_current_points_to_latest(stores, source_dir) -> None:
    source, store = stores
    versions = []
    for i in range(7):
        (source_dir / "four.jpg").write_bytes(_jpeg((i, i, i)))
        versions.append(ingest_catalog(source, store).version)
    kept = sorted(i.key for i in store.list(layout.MANIFEST_PREFIX) if i.key.endswith("parquet"))
    assert len(kept) == 5 and kept[-1].endswith(f"{versions[-1]}.parquet")
    assert store.read_pointer(layout.MANIFEST_CURRENT) == versions[-1]


MAX_BYTES = 64 * 1024


@pytest.fixture
def hostile_source(source_dir: Path, tmp_path: Path) -> dict[str, str]:
    """The good photos of ``source_dir`` plus every odd entry a real folder holds.

    Returns the expected reject reason per odd path.
    """
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(_jpeg((9, 9, 9)))
    os.mkfifo(source_dir / "fifo.jpg")
    os.symlink("loop.jpg", source_dir / "loop.jpg")
    os.symlink("/dev/zero", source_dir / "zero.jpg")
    os.symlink(outside, source_dir / "passwd.jpg")
    os.symlink("gone.jpg", source_dir / "dangling.jpg")
    with open(source_dir / "huge.jpg", "wb") as handle:  # sparse: 4 GiB that take no disk
        handle.truncate(4 << 30)
    (source_dir / "big.jpg").write_bytes(_jpeg((1, 1, 1)) + bytes(MAX_BYTES))
    os.symlink("a/one.jpg", source_dir / "link-inside.jpg")
    (source_dir / ".hidden.jpg").write_bytes(b"not a photo")
    (source_dir / ".git").mkdir()
    (source_dir / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    expected = {}
    with contextlib.suppress(OSError):  # a socket path over 107 bytes cannot be bound
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(source_dir / "socket.jpg"))
        sock.close()
        expected["socket.jpg"] = "not_a_regular_file"
    return expected | {
        "fifo.jpg": "not_a_regular_file",
        "loop.jpg": "unreadable",
        "zero.jpg": "outside_source",
        "passwd.jpg": "outside_source",
        "dangling.jpg": "vanished",
        "huge.jpg": "too_large",
        "big.jpg": "too_large",
    }


def test_hostile_entries_are_rejects_with_reasons_and_the_rest_ingests(
    stores, source_dir, hostile_source, monkeypatch
) -> None:
    source, store = stores
    summary = finishes_within(
        30,
        lambda: ingest_catalog(source, store, chunk_size=2, max_bytes=MAX_BYTES),
        fifos=[source_dir / "fifo.jpg"],
    )
    rows = _rows(store)
    good = {"a/one.jpg", "a/two.jpg", "b/three.jpg", "four.jpg", "link-inside.jpg"}
    assert {path for path, row in rows.items() if row["status"] == "ok"} == good
    rejects = {r["rel_path"]: r["reason"] for r in read_rejects(store).to_pylist()}
    assert rejects == hostile_source
    assert not any(path.startswith(".") for path in rows), "hidden entries have no row"
    assert rows["fifo.jpg"]["sha256"] is None, "a FIFO is never read"
    assert (summary.images, summary.ok, summary.listed) == (5, 5, 5 + len(hostile_source))
    assert summary.rejected == summary.rejects_total == len(hostile_source)
    assert (summary.skipped, summary.skipped_reasons) == (2, {"hidden": 2})
    assert summary.reject_reasons["too_large"] == 2

    # the next run: the same refusals are unchanged, not news
    again = finishes_within(30, lambda: ingest_catalog(source, store, max_bytes=MAX_BYTES))
    assert (again.new, again.changed, again.removed, again.rejected) == (0, 0, 0, 0)
    assert again.rejects_total == len(hostile_source) and again.unchanged == again.listed


def test_follow_symlinks_reads_links_out_of_the_source_but_never_a_device(
    stores, source_dir, hostile_source
) -> None:
    source, store = stores
    finishes_within(
        30,
        lambda: ingest_catalog(source, store, max_bytes=MAX_BYTES, follow_symlinks=True),
        fifos=[source_dir / "fifo.jpg"],
    )
    rows = _rows(store)
    assert rows["passwd.jpg"]["status"] == "ok"
    assert rows["zero.jpg"]["reason"] == "not_a_regular_file"


def test_raising_the_byte_limit_admits_a_too_large_photo_without_touching_it(
    stores, source_dir
) -> None:
    source, store = stores
    (source_dir / "big.jpg").write_bytes(_jpeg((1, 1, 1)) + bytes(MAX_BYTES))
    ingest_catalog(source, store, max_bytes=MAX_BYTES)
    assert _rows(store)["big.jpg"]["reason"] == "too_large"
    summary = ingest_catalog(source, store, max_bytes=4 * MAX_BYTES)
    assert _rows(store)["big.jpg"]["status"] == "ok" and summary.changed == 1


def test_a_file_removed_between_listing_and_reading_is_a_vanished_reject(stores) -> None:
    source, store = stores
    plan = ingest.plan_ingest(source, store)
    (source.root / "four.jpg").unlink()
    tables = [ingest.inspect_chunk(source, chunk) for chunk in plan.chunks]
    rows = {row["rel_path"]: row for table in tables for row in table.to_pylist()}
    assert (rows["four.jpg"]["status"], rows["four.jpg"]["reason"]) == ("rejected", "vanished")


def test_hidden_entries_are_skipped_alike_in_a_folder_and_a_bucket(store) -> None:
    """A catalog synced from a folder to S3 ingests the same photos, skips the same names."""
    from tiefvision_core.catalog.sources import list_source

    for key in ("a.jpg", ".DS_Store", ".git/HEAD", "x/.cache/y.jpg", "x/z.jpg"):
        store.put_bytes(key, b"bytes")
    listing = list_source(store)
    assert [info.key for info in listing.entries] == ["a.jpg", "x/z.jpg"]
    hidden_folders = {(".git", "hidden"), ("x/.cache", "hidden")}
    # S3's listing never shows an object whose own name is hidden, so only disk counts it
    hidden_files = {(".DS_Store", "hidden")} if isinstance(store, LocalStore) else set()
    assert set(listing.skipped) == hidden_folders | hidden_files


def test_as_box_gives_four_python_ints_from_a_list_or_an_array() -> None:
    assert as_box([1, 2, 3, 4]) == (1, 2, 3, 4)
    box = as_box(np.array([10, 20, 30, 40], np.int64))  # as Parquet reads a list column
    assert box == (10, 20, 30, 40)
    assert all(type(v) is int for v in box)
    with pytest.raises(ValueError):
        as_box([1, 2, 3])
