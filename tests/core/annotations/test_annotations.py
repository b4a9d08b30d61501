"""Annotations store: migrations, box/COCO/triplet imports, upserts, snapshots — on SQLite
and on a real PostgreSQL server, with a catalog made by the real ingest."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from tiefvision_core.annotations.database import (
    alembic_config,
    database_url_for,
    head_revision,
    make_engine,
    parse_database_url,
)
from tiefvision_core.annotations.files import Box
from tiefvision_core.annotations.repository import AnnotationDatabase, open_annotations
from tiefvision_core.annotations.schema import Base
from tiefvision_core.annotations.snapshots import read_snapshot
from tiefvision_core.catalog.ingest import ingest_catalog
from tiefvision_core.catalog.manifest import find_renames, image_id_for, read_manifest, usable_rows
from tiefvision_core.catalog.synthetic import generate_catalog
from tiefvision_core.config import load_settings
from tiefvision_core.errors import ConfigError, InputError, StorageUnreachable
from tiefvision_core.storage.stores import LocalStore

WIDTH, HEIGHT = 160, 200
HEADER = "image,left,top,right,bottom\n"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 products × 2 views at 160×200, plus one file ingest rejects."""
    out = tmp_path_factory.mktemp("catalog")
    generate_catalog(out, products=4, views=2, seed=0, size=(WIDTH, HEIGHT))
    (out / "images" / "bad.jpg").write_bytes(b"<html>not a photo</html>")
    return out / "images"


@pytest.fixture
def store(photos: Path, tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    ingest_catalog(LocalStore(photos, create=False), store)
    return store


@pytest.fixture
def manifest(store: LocalStore):
    return read_manifest(store)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'annotations.sqlite'}"
    return request.getfixturevalue("postgres_db_url")


@pytest.fixture
def db(db_url: str):
    with AnnotationDatabase(db_url) as annotations:
        yield annotations


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _refused(report) -> list[tuple[object, str, str]]:
    return [(r.line, r.image, r.reason) for r in report.refused]


# -- schema -------------------------------------------------------------------------------
def test_open_migrates_to_head_and_matches_the_models(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with AnnotationDatabase(db_url) as first:
        assert first.schema_revision() == head_revision() == "0002"
        assert first.counts() == {"boxes": 0, "triplets": 0}
        with first._engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    with AnnotationDatabase(db_url) as again:  # reopening is a no-op
        assert again.schema_revision() == head_revision()


def test_concurrent_opens_of_a_new_database_all_succeed(db_url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_one() -> None:
        try:
            start.wait()
            with AnnotationDatabase(db_url) as annotations:
                annotations.set_box(f"img-{threading.get_ident()}", (0, 0, 5, 5))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with AnnotationDatabase(db_url) as annotations:
        assert annotations.counts()["boxes"] == 6
        assert annotations.schema_revision() == head_revision()


# -- box CSV ------------------------------------------------------------------------------
def test_csv_import_refuses_bad_rows_with_their_line(db, manifest, tmp_path) -> None:
    csv = _write(
        tmp_path / "boxes.csv",
        HEADER
        + "p0000/view-1.jpg,10,20,110,180\n"  # 2: by path
        + f"{image_id_for('p0000/view-2.jpg')},0,0,{WIDTH},{HEIGHT}\n"  # 3: by id, whole image
        + "p9999/view-1.jpg,1,1,5,5\n"  # 4
        + "p0001/view-1.jpg,-1,0,10,10\n"  # 5
        + f"p0001/view-2.jpg,0,0,{WIDTH + 1},10\n"  # 6
        + "p0002/view-1.jpg,10,10,10,20\n"  # 7
        + "\n"  # 8: blank lines are skipped, still counted
        + "p0003/view-1.jpg,abc,0,10,10\n"  # 9
        + "bad.jpg,0,0,10,10\n"  # 10
        + "p0003/view-2.jpg,1,2,3\n"  # 11
        + "p0002/view-2.jpg, 5 ,6.4,50.5,60\n",  # 12: spaces and decimals round
    )
    report = db.import_boxes(csv, manifest)
    assert (report.kind, report.source) == ("boxes", "csv:boxes.csv")
    assert (report.imported, report.updated, report.unchanged) == (3, 0, 0)
    unknown = (
        "unknown image: not in the catalog (name it by image_id or by its path relative "
        "to the ingested folder)"
    )
    assert _refused(report) == [
        (4, "p9999/view-1.jpg", unknown),
        (5, "p0001/view-1.jpg", "box -1,0,10,10 outside the 160x200 image"),
        (6, "p0001/view-2.jpg", "box 0,0,161,10 outside the 160x200 image"),
        (7, "p0002/view-1.jpg", "empty box 10,10,10,20: right must exceed left, bottom top"),
        (9, "p0003/view-1.jpg", "left is not a number ('abc')"),
        (10, "bad.jpg", "image rejected at ingest (not_an_image)"),
        (11, "p0003/view-2.jpg", "4 fields where the header has 5"),
    ]
    frame = db.boxes()
    assert list(frame.columns) == [
        "image_id",
        "left",
        "top",
        "right",
        "bottom",
        "source",
        "updated_at",
        "sha256",
    ]
    shas = {row["image_id"]: row["sha256"] for row in manifest.to_pylist()}
    assert all(shas[row.image_id] == row.sha256 for row in frame.itertuples())  # drawn on
    got = {row.image_id: (row.left, row.top, row.right, row.bottom) for row in frame.itertuples()}
    assert got == {
        image_id_for("p0000/view-1.jpg"): (10, 20, 110, 180),
        image_id_for("p0000/view-2.jpg"): (0, 0, WIDTH, HEIGHT),
        image_id_for("p0002/view-2.jpg"): (5, 6, 51, 60),
    }
    assert str(frame["updated_at"].dt.tz) == "UTC"
    text = report.format()
    assert text.splitlines()[0] == ("csv:boxes.csv: 3 imported, 0 updated, 0 unchanged, 7 refused")
    assert "line" in text and "reason" in text and "not_an_image" in text
    assert json.loads(json.dumps(report.as_dict()))["refused"][0] == {
        "line": 4,
        "image": "p9999/view-1.jpg",
        "reason": unknown,
    }


def test_reimport_replaces_boxes_and_counts_unchanged(db, manifest, tmp_path) -> None:
    first = _write(
        tmp_path / "a.csv", HEADER + "p0000/view-1.jpg,1,1,50,50\np0001/view-1.jpg,2,2,60,60\n"
    )
    assert db.import_boxes(first, manifest).imported == 2
    before = db.get_box(image_id_for("p0000/view-1.jpg"))
    again = db.import_boxes(first, manifest)
    assert (again.imported, again.updated, again.unchanged) == (0, 0, 2)
    assert db.get_box(image_id_for("p0000/view-1.jpg")) == before, "unchanged: not rewritten"

    second = _write(tmp_path / "a.csv", HEADER + "p0000/view-1.jpg,3,3,70,70\n")
    report = db.import_boxes(second, manifest)
    assert (report.imported, report.updated, report.unchanged) == (0, 1, 0)
    after = db.get_box(image_id_for("p0000/view-1.jpg"))
    assert after.box == Box(3, 3, 70, 70)
    assert after.created_at == before.created_at and after.updated_at > before.updated_at
    assert db.counts()["boxes"] == 2


def test_an_image_named_twice_gets_no_box(db, manifest, tmp_path) -> None:
    image_id = image_id_for("p0001/view-2.jpg")
    csv = _write(
        tmp_path / "dup.csv",
        "image_id,left,top,right,bottom\n"
        f"p0001/view-2.jpg,1,1,9,9\n./p0000/view-1.jpg,1,1,9,9\n{image_id},2,2,8,8\n",
    )
    report = db.import_boxes(csv, manifest)
    assert report.imported == 1
    why = "image has 2 lines (2, 4): TiefVision keeps one product box per image"
    assert _refused(report) == [(2, "p0001/view-2.jpg", why), (4, image_id, why)]
    assert db.get_box(image_id) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("image,left,top,right\nx,1,2,3\n", "expected the columns image,left,top,right,bottom"),
        ("name,left,top,right,bottom\n", "no column image: expected the columns image,left,"),
        ("", "is empty"),
    ],
)
def test_a_file_without_the_columns_is_refused_whole(
    db, manifest, tmp_path, content, message
) -> None:
    with pytest.raises(InputError, match=message):
        db.import_boxes(_write(tmp_path / "boxes.csv", content), manifest)
    assert db.counts()["boxes"] == 0


def test_unreadable_files_and_no_catalog(db, manifest, tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        db.import_boxes(tmp_path / "nope.csv", manifest)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(HEADER.encode() + "robe-été.jpg,1,1,5,5\n".encode("latin-1"))
    with pytest.raises(InputError, match="UTF-8"):
        db.import_boxes(latin, manifest)
    with pytest.raises(InputError, match="tiefvision ingest"):
        db.import_boxes(_write(tmp_path / "b.csv", HEADER), None)


# -- COCO ---------------------------------------------------------------------------------
def test_coco_import(db, manifest, tmp_path) -> None:
    coco = {
        "images": [
            {"id": 1, "file_name": "p0000/view-1.jpg", "width": WIDTH, "height": HEIGHT},
            {"id": 2, "file_name": "p0000/view-2.jpg", "width": WIDTH, "height": HEIGHT},
            {"id": 3, "file_name": "p0001/view-1.jpg"},
            {"id": 4, "file_name": "p0001/view-2.jpg", "width": 200, "height": 160},
            {"id": 5, "file_name": "missing.jpg"},
            {"id": 6, "file_name": "p0002/view-1.jpg"},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "bbox": [10.4, 20.5, 30.2, 40.6], "category_id": 1},
            {"id": 11, "image_id": 2, "bbox": [0, 0, 10, 10]},
            {"id": 12, "image_id": 3, "bbox": [1, 1, 20, 20]},
            {"id": 13, "image_id": 2, "bbox": [5, 5, 10, 10]},
            {"id": 14, "image_id": 4, "bbox": [1, 1, 2, 2]},
            {"id": 15, "image_id": 5, "bbox": [1, 1, 2, 2]},
            {"id": 16, "image_id": 99, "bbox": [1, 1, 2, 2]},
            {"id": 17, "image_id": 6, "bbox": [150, 1, 20, 2]},
            {"id": 18, "image_id": 6, "bbox": ["a", 1, 2, 2]},
        ],
    }
    path = _write(tmp_path / "labels.json", json.dumps(coco))
    report = db.import_boxes(path, manifest)
    assert (report.source, report.imported) == ("coco:labels.json", 2)
    two = "image has 2 annotations (annotations[1], annotations[3]): TiefVision keeps one "
    refused = _refused(report)
    assert refused[:2] == [
        ("annotations[1]", "p0000/view-2.jpg", two + "product box per image"),
        ("annotations[3]", "p0000/view-2.jpg", two + "product box per image"),
    ]
    assert refused[2][0] == "annotations[4]" and "COCO size 200x160 differs" in refused[2][2]
    assert refused[3][0] == "annotations[5]" and refused[3][2].startswith("unknown image")
    assert refused[4] == ("annotations[6]", "", "image_id 99 is not in images[]")
    assert refused[5] == (
        "annotations[7]",
        "p0002/view-1.jpg",
        "box 150,1,170,3 outside the 160x200 image",
    )
    # annotations[8] also names image 6: both of its annotations are refused, each for its
    # own reason (the first already had one)
    assert refused[6] == ("annotations[8]", "p0002/view-1.jpg", "bbox is not a number ('a')")
    assert len(refused) == 7
    # x=10.4 → 10, y=20.5 → 21, right=40.6 → 41, bottom=61.1 → 61
    assert db.get_box(image_id_for("p0000/view-1.jpg")).box == Box(10, 21, 41, 61)
    assert db.get_box(image_id_for("p0000/view-1.jpg")).source == "coco:labels.json"
    assert db.get_box(image_id_for("p0000/view-2.jpg")) is None


def test_coco_that_is_not_coco_is_refused_whole(db, manifest, tmp_path) -> None:
    with pytest.raises(InputError, match=r"'images'.*'annotations'"):
        db.import_boxes(_write(tmp_path / "x.json", '{"images": []}'), manifest)
    with pytest.raises(InputError, match="not valid JSON"):
        db.import_boxes(_write(tmp_path / "y.json", "{nope"), manifest)


# -- the editor API -----------------------------------------------------------------------
def test_set_get_delete_box(db, manifest) -> None:
    image_id = image_id_for("p0001/view-1.jpg")
    assert db.set_box(image_id, (1, 2, 30, 40)) is True
    assert db.set_box("p0001/view-1.jpg", [2, 2, 30, 40], manifest=manifest) is False
    record = db.get_box(image_id)
    assert (record.box, record.source) == (Box(2, 2, 30, 40), "editor")
    with pytest.raises(InputError, match="outside the 160x200 image"):
        db.set_box(image_id, (0, 0, 500, 10), manifest=manifest)
    with pytest.raises(InputError, match="empty"):
        db.set_box(image_id, (5, 5, 5, 10))
    with pytest.raises(InputError, match="unknown image"):
        db.set_box("nope.jpg", (0, 0, 5, 5), manifest=manifest)
    assert db.delete_box(image_id) is True
    assert db.delete_box(image_id) is False
    assert db.get_box(image_id) is None


# -- triplets -----------------------------------------------------------------------------
def test_triplet_import_and_validation(db, manifest, tmp_path) -> None:
    a, b, c = "p0000/view-1.jpg", "p0000/view-2.jpg", "p0001/view-1.jpg"
    csv = _write(
        tmp_path / "triplets.csv",
        "reference,positive,negative\n"
        f"{a},{b},{c}\n"  # 2
        f"{image_id_for(b)},{a},{c}\n"  # 3
        f"{a},{a},{c}\n"  # 4
        f"{a},{image_id_for(a)},{c}\n"  # 5: path and id of one image
        f"{a},{b},nope.jpg\n"  # 6
        f"{image_id_for(a)},{b},{c}\n"  # 7: repeats line 2
        f"{a},{b}\n",  # 8
    )
    report = db.import_triplets(csv, manifest)
    assert (report.kind, report.imported, report.unchanged) == ("triplets", 2, 0)
    three = "reference, positive and negative must be three different images"
    assert [(line, reason) for line, _, reason in _refused(report)] == [
        (4, three),
        (5, three),
        (6, "negative: unknown image: not in the catalog (name it by image_id or by its path "
            "relative to the ingested folder)"),
        (7, "repeats line 2"),
        (8, "2 fields where the header has 3"),
    ]  # fmt: skip
    frame = db.triplets()
    assert list(frame.columns) == [
        "reference",
        "positive",
        "negative",
        "source",
        "created_at",
        "reference_sha256",
        "positive_sha256",
        "negative_sha256",
    ]
    assert len(frame) == 2 and set(frame["source"]) == {"csv:triplets.csv"}
    shas = {row["image_id"]: row["sha256"] for row in manifest.to_pylist()}
    for role in ("reference", "positive", "negative"):  # made on these bytes
        assert frame[f"{role}_sha256"].tolist() == frame[role].map(shas).tolist()
    again = db.import_triplets(csv, manifest)
    assert (again.imported, again.unchanged) == (0, 2)
    with pytest.raises(InputError, match="expected the columns reference,positive,negative"):
        db.import_triplets(_write(tmp_path / "t.csv", "reference,positive\n"), manifest)
    with pytest.raises(InputError, match="three different"):
        db.add_triplet("x", "x", "y")
    assert db.add_triplet(c, a, b, manifest=manifest) is True
    assert db.add_triplet(image_id_for(c), image_id_for(a), image_id_for(b)) is False
    assert db.delete_triplet(image_id_for(c), image_id_for(a), image_id_for(b)) is True
    assert db.counts() == {"boxes": 0, "triplets": 2}


# -- snapshots ----------------------------------------------------------------------------
def test_snapshot_is_content_addressed(db, manifest, store, tmp_path) -> None:
    csv = _write(
        tmp_path / "b.csv", HEADER + "p0000/view-1.jpg,1,1,50,50\np0001/view-1.jpg,2,2,60,60\n"
    )
    db.import_boxes(csv, manifest)
    first = db.export_snapshot(store)
    assert first.kind == "boxes" and first.rows == 2 and first.left_out == 0
    assert first.key == f"annotations/snapshots/boxes-{first.digest[:16]}.parquet"
    frame = read_snapshot(store, first.key)
    assert list(frame.columns) == [
        "image_id",
        "sha256",
        "width",
        "height",
        "left",
        "top",
        "right",
        "bottom",
        "source",
    ]
    shas = {row["image_id"]: row["sha256"] for row in manifest.to_pylist()}
    assert all(shas[row.image_id] == row.sha256 for row in frame.itertuples())
    assert set(zip(frame["width"], frame["height"], strict=True)) == {(WIDTH, HEIGHT)}

    written = store.local_path(first.key).stat().st_mtime_ns
    db.import_boxes(csv, manifest)  # same rows again
    assert db.export_snapshot(store) == first
    assert store.local_path(first.key).stat().st_mtime_ns == written, "existing key: skipped"

    db.set_box(image_id_for("p0001/view-1.jpg"), (2, 2, 61, 60), source="csv:b.csv")
    changed = db.export_snapshot(store)
    assert changed.key != first.key and changed.digest != first.digest
    db.set_box(image_id_for("p0001/view-1.jpg"), (2, 2, 60, 60), source="csv:b.csv")
    assert db.export_snapshot(store).key == first.key, "same rows, same key"

    db.set_box("not-in-the-catalog", (0, 0, 5, 5))
    assert db.export_snapshot(store) == dataclasses.replace(first, left_out=1)


def test_triplet_snapshot(db, manifest, store) -> None:
    ids = [image_id_for(p) for p in ("p0000/view-1.jpg", "p0000/view-2.jpg", "p0001/view-1.jpg")]
    db.add_triplet(*ids)
    snapshot = db.export_snapshot(store, "triplets")
    assert snapshot.rows == 1 and snapshot.key.startswith("annotations/snapshots/triplets-")
    row = read_snapshot(store, snapshot.key).iloc[0]
    assert (row.reference, row.positive, row.negative) == tuple(ids)
    assert len(row.reference_sha256) == 64
    with pytest.raises(InputError, match="boxes or triplets"):
        db.export_snapshot(store, "faces")


def test_snapshot_needs_a_catalog(db, tmp_path) -> None:
    with pytest.raises(InputError, match="tiefvision ingest"):
        db.export_snapshot(LocalStore(tmp_path / "empty"))


# -- annotations follow the photo's bytes ---------------------------------------------------
@pytest.fixture
def source(photos: Path, tmp_path: Path) -> Path:
    """A copy of the photos the test may rename, replace and ingest again."""
    copied = tmp_path / "source"
    shutil.copytree(photos, copied)
    return copied


THREE = tuple(image_id_for(p) for p in ("p0000/view-1.jpg", "p0000/view-2.jpg", "p0001/view-1.jpg"))


def _ingest(source: Path, store: LocalStore):
    return ingest_catalog(LocalStore(source, create=False), store)


def _shas(store: LocalStore) -> dict[str, str]:
    return {r["image_id"]: r["sha256"] for r in usable_rows(read_manifest(store)).to_pylist()}


def test_a_replaced_photo_makes_its_annotations_stale_until_confirmed(db, source, tmp_path):
    """A photo replaced by other bytes keeps its box and triplets in the database, marked
    stale: left out of both training snapshots (and counted) until written again."""
    store = LocalStore(tmp_path / "store")
    _ingest(source, store)
    a, b, c = THREE
    db.set_box(a, (10, 10, 90, 150), manifest=read_manifest(store))
    db.set_box(c, (5, 5, 60, 60), manifest=read_manifest(store))
    db.add_triplet(a, b, c, manifest=read_manifest(store))
    drawn_on = _shas(store)[a]
    assert db.get_box(a).sha256 == drawn_on and not db.get_box(a).stale(drawn_on)

    (source / "p0000" / "view-1.jpg").write_bytes((source / "p0003" / "view-2.jpg").read_bytes())
    assert _ingest(source, store).changed == 1
    now = _shas(store)[a]
    assert now != drawn_on and db.get_box(a).stale(now)

    boxes = db.export_snapshot(store, "boxes")
    assert (boxes.rows, boxes.stale, boxes.left_out) == (1, 1, 0)
    assert set(read_snapshot(store, boxes.key)["image_id"]) == {c}  # not a's old box
    triplets = db.export_snapshot(store, "triplets")
    assert (triplets.rows, triplets.stale) == (0, 1)

    # Confirmed: the same box and triplet written again, now on the photo's current bytes.
    db.set_box(a, (10, 10, 90, 150), manifest=read_manifest(store))
    assert db.get_box(a).sha256 == now and not db.get_box(a).stale(now)
    assert db.add_triplet(a, b, c, manifest=read_manifest(store)) is False  # not new
    confirmed = db.export_snapshot(store, "boxes")
    assert (confirmed.rows, confirmed.stale) == (2, 0)
    assert (db.export_snapshot(store, "triplets").rows, db.triplets().shape[0]) == (1, 1)


def test_a_renamed_photo_takes_its_box_and_triplets_along(db, source, tmp_path) -> None:
    """Renamed in the source (same bytes, new id): the box and every triplet naming the
    old id move to the new one; doing it again moves nothing."""
    store = LocalStore(tmp_path / "store")
    _ingest(source, store)
    old, b, c = THREE
    db.set_box(old, (10, 10, 90, 150), manifest=read_manifest(store))
    db.add_triplet(old, b, c, manifest=read_manifest(store))
    db.add_triplet(c, old, b, manifest=read_manifest(store))
    sha = _shas(store)[old]

    (source / "p0000" / "view-1.jpg").rename(source / "p0000" / "front.jpg")
    summary = _ingest(source, store)
    new = image_id_for("p0000/front.jpg")
    assert (summary.new, summary.removed) == (1, 1)
    assert find_renames(read_manifest(store)) == {old: new}

    moved = db.follow_ingest(store, summary.version, summary.previous_version)
    assert moved == {"recorded": 0, "boxes": 1, "triplets": 2}
    assert db.get_box(old) is None
    record = db.get_box(new)
    assert (record.box, record.sha256) == (Box(10, 10, 90, 150), sha)
    triples = set(db.triplets()[["reference", "positive", "negative"]].itertuples(index=False))
    assert triples == {(new, b, c), (c, new, b)}
    snapshot = db.export_snapshot(store, "boxes")
    assert (snapshot.rows, snapshot.left_out, snapshot.stale) == (1, 0, 0)
    again = db.follow_ingest(store, summary.version, summary.previous_version)
    assert again == {"recorded": 0, "boxes": 0, "triplets": 0}


def test_a_database_of_revision_0001_upgrades_and_its_rows_get_their_bytes(
    db_url: str, source: Path, tmp_path: Path
) -> None:
    """A database written before the bytes were recorded keeps its rows; the next ingest
    records the bytes of the manifest it replaces, so a photo it replaced is stale."""
    from alembic import command

    engine = make_engine(parse_database_url(db_url))
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0001")
    store = LocalStore(tmp_path / "store")
    _ingest(source, store)
    image_id = image_id_for("p0000/view-1.jpg")
    with engine.begin() as connection:
        connection.execute(
            text(
                'INSERT INTO boxes (image_id, "left", top, "right", bottom, source, created_at, '
                "updated_at) VALUES (:i, 1, 2, 30, 40, 'csv:old.csv', :t, :t)"
            ),
            {"i": image_id, "t": datetime.now(UTC)},
        )
    engine.dispose()

    with AnnotationDatabase(db_url) as upgraded:
        assert upgraded.schema_revision() == "0002"
        record = upgraded.get_box(image_id)
        assert (record.box, record.sha256) == (Box(1, 2, 30, 40), None)
        assert not record.stale("anything")  # bytes unknown: trusted as before
        drawn_on = _shas(store)[image_id]
        (source / "p0000" / "view-1.jpg").write_bytes(
            (source / "p0003" / "view-2.jpg").read_bytes()
        )
        summary = _ingest(source, store)
        followed = upgraded.follow_ingest(store, summary.version, summary.previous_version)
        assert followed["recorded"] == 1
        assert upgraded.get_box(image_id).sha256 == drawn_on
        assert upgraded.get_box(image_id).stale(_shas(store)[image_id])
        assert upgraded.export_snapshot(store, "boxes").stale == 1


# -- URLs, settings, secrets --------------------------------------------------------------
def test_default_database_is_sqlite_under_a_local_store(tmp_path: Path) -> None:
    settings = load_settings(store_url=str(tmp_path / "store"))
    url = database_url_for(settings)
    assert url.drivername == "sqlite"
    assert url.database == str(tmp_path / "store" / "annotations.sqlite")
    with open_annotations(settings) as annotations:
        assert annotations.schema_revision() == head_revision()
    assert (tmp_path / "store" / "annotations.sqlite").is_file()


def test_s3_store_without_database_url_fails_fast() -> None:
    settings = load_settings(store_url="s3://bucket/prefix")
    with pytest.raises(ConfigError, match="TIEFVISION_DATABASE_URL"):
        open_annotations(settings)
    with_url = load_settings(store_url="s3://bucket/prefix", database_url="sqlite:////tmp/x.db")
    assert database_url_for(with_url).database == "/tmp/x.db"


def test_urls_are_normalised_or_refused() -> None:
    settings = load_settings(database_url="postgresql://u:pw@db.example/tv")
    assert database_url_for(settings).drivername == "postgresql+psycopg"
    with pytest.raises(ConfigError, match="mysql is not supported"):
        AnnotationDatabase("mysql://u:hunter2-secret@h/db")
    with pytest.raises(ConfigError, match="not a URL") as caught:
        AnnotationDatabase("hunter2-secret-not-a-url")
    assert "hunter2" not in str(caught.value)


def test_password_never_in_messages_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "pw-Zz91-never-shown"
    with pytest.raises(StorageUnreachable) as caught:
        AnnotationDatabase(f"postgresql+psycopg://tiefvision:{secret}@127.0.0.1:9/tv")
    message = str(caught.value)
    assert "tiefvision:***@127.0.0.1:9/tv" in message and "TIEFVISION_DATABASE_URL" in message
    assert secret not in message and secret not in caplog.text


def test_password_hidden_on_a_live_server(postgres_db_url: str, caplog) -> None:
    from sqlalchemy import make_url

    caplog.set_level(logging.DEBUG)
    secret = "pw-Zz92-never-shown"  # the test server trusts loopback: any password works
    url = make_url(postgres_db_url).set(password=secret)
    with AnnotationDatabase(url) as annotations:
        assert secret not in repr(annotations) and "***" in annotations.display_url
        annotations.set_box("x", (0, 0, 1, 1))
    assert secret not in caplog.text
