"""Annotations — one product box per image, similarity triplets — in a SQL database.

Why SQL when everything else is Parquet on storage: people edit annotations one at a time
(the box and triplet editors) while pipelines read them; that needs row updates, uniqueness
and concurrent writers, which a database gives and a folder of immutable files does not.
What a model was trained on is frozen the other way round: :meth:`AnnotationDatabase.
export_snapshot` writes a content-addressed Parquet snapshot to storage and the model
records its key and digest.


The database itself — where it is, its engine and migrations — is
:mod:`tiefvision_core.annotations.database`, its tables
:mod:`tiefvision_core.annotations.schema`; snapshots are written by
:mod:`tiefvision_core.annotations.snapshots`, annotations follow the catalog through
:mod:`tiefvision_core.annotations.following`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
from sqlalchemy import URL, Engine, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from tiefvision_core.annotations.database import (
    WRITE_OPTION,
    database_errors,
    database_url_for,
    make_engine,
    parse_database_url,
    upgrade_schema,
)
from tiefvision_core.annotations.files import (
    Box,
    CatalogIndex,
    Refusal,
    box_problem,
    read_box_file,
    read_triplet_file,
)
from tiefvision_core.annotations.following import (
    HeldBytes,
    Unheld,
    fill_box_bytes,
    fill_triplet_bytes,
    move_boxes,
    rename_triplets,
    unheld_rows,
)
from tiefvision_core.annotations.schema import (
    TRIPLET_IDS,
    TRIPLET_SHAS,
    BoxRow,
    Shas,
    Triple,
    TripletRow,
    in_chunks,
)
from tiefvision_core.annotations.snapshots import SNAPSHOT_KINDS, Snapshot, write_snapshot
from tiefvision_core.catalog.manifest import find_renames, read_manifest
from tiefvision_core.errors import InputError
from tiefvision_core.storage.layout import manifest_key

if TYPE_CHECKING:
    from tiefvision_core.config import Settings
    from tiefvision_core.storage.stores import Store

__all__ = [
    "AnnotationDatabase",
    "BoxRecord",
    "ImportReport",
    "existing_annotations",
    "open_annotations",
]

log = logging.getLogger(__name__)


# -- results ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BoxRecord:
    image_id: str
    box: Box
    source: str
    created_at: datetime
    updated_at: datetime
    sha256: str | None = None  # the bytes the box was drawn on; None: not recorded

    def stale(self, current_sha256: str | None) -> bool:
        """Drawn on other bytes than the photo has now: the box may no longer fit, so it
        is shown as stale and left out of training until a person confirms it."""
        return self.sha256 is not None and self.sha256 != current_sha256


@dataclass
class ImportReport:
    """What one import did. ``updated`` replaced a different stored box; ``unchanged`` rows
    were already stored exactly so (re-importing a file is a no-op)."""

    kind: str
    source: str
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: list[Refusal] = field(default_factory=list)

    def format(self) -> str:
        """A summary line, then one table row per refused line (for a terminal)."""
        head = (
            f"{self.source}: {self.imported} imported, {self.updated} updated, "
            f"{self.unchanged} unchanged, {len(self.refused)} refused"
        )
        if not self.refused:
            return head
        shown = [(str(r.line), _shorten(r.image, 48), r.reason) for r in self.refused]
        w_line = max(4, *(len(line) for line, _, _ in shown))
        w_image = max(5, *(len(image) for _, image, _ in shown))
        rows = [f"{'line':<{w_line}}  {'image':<{w_image}}  reason"]
        rows += [f"{line:<{w_line}}  {image:<{w_image}}  {why}" for line, image, why in shown]
        return "\n".join([head, "", *rows])

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["refused"] = [r._asdict() for r in self.refused]
        return data


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we write is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _shorten(value: str, width: int) -> str:
    return value if len(value) <= width else value[: width - 3] + "..."


def _sha256_of(catalog: CatalogIndex, image_id: str) -> str | None:
    image = catalog.get(image_id)
    return None if image is None else image.sha256


def _sha256s_of(catalog: CatalogIndex, triple: Triple) -> Shas:
    return (
        _sha256_of(catalog, triple[0]),
        _sha256_of(catalog, triple[1]),
        _sha256_of(catalog, triple[2]),
    )


def _triplet_values(triple: Triple, shas: Shas) -> dict[str, str | None]:
    """A triplet's ids and recorded bytes as column → value."""
    return dict(zip((*TRIPLET_IDS, *TRIPLET_SHAS), (*triple, *shas), strict=True))


# -- the store ----------------------------------------------------------------------------
class AnnotationDatabase:
    """Boxes and triplets in one database; opening it brings the schema to head."""

    def __init__(self, url: str | URL, *, migrate: bool = True) -> None:
        self.url = parse_database_url(url)
        self._engine = make_engine(self.url)
        self._writer = self._engine.execution_options(**{WRITE_OPTION: True})
        if migrate:
            with database_errors(self.url, "open"):
                self._upgrade()

    # -- plumbing ---------------------------------------------------------------------
    @property
    def display_url(self) -> str:
        """The URL for messages and logs: the password is always ``***``."""
        return self.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"AnnotationDatabase({self.display_url})"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for tools (new migrations, ad-hoc queries)."""
        return self._engine

    def __enter__(self) -> AnnotationDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._engine.dispose()

    def _insert(self, table: Any) -> Any:
        if self.url.get_backend_name() == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as postgresql_insert

            return postgresql_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    def _upgrade(self) -> None:
        upgrade_schema(self._writer)
        log.debug("annotations database %s: schema at head", self.display_url)

    def schema_revision(self) -> str | None:
        """The schema revision the database is at (``alembic current``)."""
        from alembic.runtime.migration import MigrationContext

        with database_errors(self.url, "read"), self._engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    # -- boxes ------------------------------------------------------------------------
    def import_boxes(self, path: str | Path, manifest: pa.Table | None) -> ImportReport:
        """Import a box CSV or COCO JSON file, validated against ``manifest``.

        Valid rows are upserted (a new box for an image replaces its old one); invalid ones
        are refused with their line. Raises :class:`InputError` only when the file as a
        whole is unusable, or when nothing was ingested yet (``manifest`` is ``None``).
        """
        catalog = CatalogIndex(manifest)
        parsed = read_box_file(path, catalog)
        report = ImportReport("boxes", parsed.source, refused=list(parsed.refused))
        items = [(row.image_id, row.box, _sha256_of(catalog, row.image_id)) for row in parsed.rows]
        report.imported, report.updated, report.unchanged = self._upsert_boxes(items, parsed.source)
        return report

    def _upsert_boxes(
        self, items: Sequence[tuple[str, Box, str | None]], source: str
    ) -> tuple[int, int, int]:
        """Write boxes with the bytes they were drawn on. A row stored exactly so (box,
        source and bytes) is unchanged; the same box on other bytes is an update: that is
        how a stale box is confirmed for the photo's current bytes."""
        table = BoxRow.__table__
        coords = [table.c.left, table.c.top, table.c.right, table.c.bottom]
        now = datetime.now(UTC)
        with database_errors(self.url, "write to"), self._writer.begin() as connection:
            stored: dict[str, tuple[Box, str, str | None]] = {}
            for chunk in in_chunks([image_id for image_id, _, _ in items]):
                query = select(table.c.image_id, *coords, table.c.source, table.c.sha256).where(
                    table.c.image_id.in_(chunk)
                )
                for row in connection.execute(query):
                    stored[row[0]] = (Box(*row[1:5]), row[5], row[6])
            changes = [item for item in items if stored.get(item[0]) != (item[1], source, item[2])]
            if changes:
                insert = self._insert(table)
                columns = ("left", "top", "right", "bottom", "source", "updated_at", "sha256")
                upsert = insert.on_conflict_do_update(
                    index_elements=[table.c.image_id],
                    set_={name: insert.excluded[name] for name in columns},
                )
                connection.execute(
                    upsert,
                    [
                        {"image_id": i, **box._asdict(), "source": source, "sha256": sha}
                        | {"created_at": now, "updated_at": now}
                        for i, box, sha in changes
                    ],
                )
        updated = sum(1 for i, _, _ in changes if i in stored)
        return len(changes) - updated, updated, len(items) - len(changes)

    def set_box(
        self,
        image_id: str,
        box: Sequence[int],
        source: str = "editor",
        *,
        manifest: pa.Table | None = None,
        sha256: str | None = None,
    ) -> bool:
        """Store the product box of one image (replacing any); ``True`` when it is new.

        With ``manifest``, ``image_id`` may also be a relative path and the box must lie
        inside the image; without it only the box's own shape is checked. The box is
        recorded as drawn on ``sha256``, else on the manifest's bytes of the image (neither:
        not recorded); storing it again on the current bytes confirms a stale box.
        """
        try:
            values = Box(*(int(v) for v in box))
        except (TypeError, ValueError):
            raise InputError(
                f"box {box!r}: expected four integers left, top, right, bottom"
            ) from None
        if manifest is not None:
            image = CatalogIndex(manifest).resolve(image_id)
            if isinstance(image, str):
                raise InputError(f"image {image_id!r}: {image}")
            image_id, problem = image.image_id, box_problem(values, image)
            sha256 = sha256 or image.sha256
        else:
            left, top, right, bottom = values
            problem = None
            if right <= left or bottom <= top or left < 0 or top < 0:
                problem = f"box {left},{top},{right},{bottom} is empty or starts below 0"
        if problem:
            raise InputError(f"image {image_id!r}: {problem}")
        new, _updated, _same = self._upsert_boxes([(image_id, values, sha256)], source)
        return new == 1

    def get_box(self, image_id: str) -> BoxRecord | None:
        """The stored box of ``image_id``, or ``None``."""
        with database_errors(self.url, "read"), Session(self._engine) as session:
            row = session.get(BoxRow, image_id)
            if row is None:
                return None
            return BoxRecord(
                row.image_id,
                Box(row.left, row.top, row.right, row.bottom),
                row.source,
                _utc(row.created_at),
                _utc(row.updated_at),
                row.sha256,
            )

    def delete_box(self, image_id: str) -> bool:
        """Forget the box of ``image_id``; ``True`` when there was one."""
        with database_errors(self.url, "write to"), self._writer.begin() as connection:
            result = connection.execute(delete(BoxRow).where(BoxRow.image_id == image_id))
            return result.rowcount > 0

    def boxes(self) -> pd.DataFrame:
        """Every box: image_id, left, top, right, bottom, source, updated_at (UTC), sha256
        (the bytes it was drawn on, None when not recorded)."""
        query = select(
            BoxRow.image_id,
            BoxRow.left,
            BoxRow.top,
            BoxRow.right,
            BoxRow.bottom,
            BoxRow.source,
            BoxRow.updated_at,
            BoxRow.sha256,
        ).order_by(BoxRow.image_id)
        return self._frame(query, "updated_at")

    # -- triplets ---------------------------------------------------------------------
    def import_triplets(self, path: str | Path, manifest: pa.Table | None) -> ImportReport:
        """Import a triplet CSV ``reference,positive,negative`` validated against
        ``manifest``; triplets already stored count as unchanged."""
        catalog = CatalogIndex(manifest)
        parsed = read_triplet_file(path, catalog)
        report = ImportReport("triplets", parsed.source, refused=list(parsed.refused))
        items = [
            (triple, _sha256s_of(catalog, triple))
            for triple in ((row.reference, row.positive, row.negative) for row in parsed.rows)
        ]
        report.imported, report.updated = self._write_triplets(items, parsed.source)
        report.unchanged = len(items) - report.imported - report.updated
        return report

    def _write_triplets(self, items: Sequence[tuple[Triple, Shas]], source: str) -> tuple[int, int]:
        """Insert new triplets; a stored one named with other bytes gets them (confirmed
        for the photos' current bytes; a caller naming no bytes changes nothing). Returns
        (inserted, confirmed)."""
        table = TripletRow.__table__
        ids, shas = TRIPLET_IDS, TRIPLET_SHAS
        now = datetime.now(UTC)
        with database_errors(self.url, "write to"), self._writer.begin() as connection:
            stored: dict[Triple, Shas] = {}
            for chunk in in_chunks(sorted({t[0] for t, _ in items})):
                query = select(*(table.c[c] for c in (*ids, *shas))).where(
                    table.c.reference.in_(chunk)
                )
                stored.update((tuple(row[:3]), tuple(row[3:])) for row in connection.execute(query))
            new = [(t, s) for t, s in items if t not in stored]
            confirmed = [(t, s) for t, s in items if t in stored and stored[t] != s and any(s)]
            if new:
                insert = self._insert(table).on_conflict_do_nothing(
                    index_elements=[table.c[c] for c in ids]
                )
                connection.execute(
                    insert,
                    [_triplet_values(t, s) | {"source": source, "created_at": now} for t, s in new],
                )
            if confirmed:
                connection.execute(
                    update(TripletRow)
                    .where(*(table.c[c] == bindparam(f"b_{c}") for c in ids))
                    .values({c: bindparam(f"b_{c}") for c in shas}),
                    [{f"b_{k}": v for k, v in _triplet_values(t, s).items()} for t, s in confirmed],
                )
        return len(new), len(confirmed)

    def add_triplet(
        self,
        reference: str,
        positive: str,
        negative: str,
        source: str = "editor",
        *,
        manifest: pa.Table | None = None,
        sha256s: Shas | None = None,
    ) -> bool:
        """Store one triplet; ``True`` when it is new. With ``manifest`` the images may be
        named by path and must be usable in the catalog. The triplet is recorded as made on
        ``sha256s`` (one per image), else on the manifest's bytes (neither: not recorded)."""
        ids = [reference, positive, negative]
        if manifest is not None:
            catalog = CatalogIndex(manifest)
            for n, name in enumerate(ids):
                image = catalog.resolve(name)
                if isinstance(image, str):
                    raise InputError(f"image {name!r}: {image}")
                ids[n] = image.image_id
            sha256s = sha256s or _sha256s_of(catalog, (ids[0], ids[1], ids[2]))
        if len(set(ids)) < 3:
            raise InputError("reference, positive and negative must be three different images")
        triple = (ids[0], ids[1], ids[2])
        inserted, _ = self._write_triplets([(triple, sha256s or (None, None, None))], source)
        return inserted == 1

    def delete_triplet(self, reference: str, positive: str, negative: str) -> bool:
        """Forget one triplet; ``True`` when it was stored."""
        query = delete(TripletRow).where(
            TripletRow.reference == reference,
            TripletRow.positive == positive,
            TripletRow.negative == negative,
        )
        with database_errors(self.url, "write to"), self._writer.begin() as connection:
            return connection.execute(query).rowcount > 0

    def triplets(self) -> pd.DataFrame:
        """Every triplet: reference, positive, negative, source, created_at (UTC), and
        reference_sha256, positive_sha256, negative_sha256 (None when not recorded)."""
        query = select(
            TripletRow.reference,
            TripletRow.positive,
            TripletRow.negative,
            TripletRow.source,
            TripletRow.created_at,
            TripletRow.reference_sha256,
            TripletRow.positive_sha256,
            TripletRow.negative_sha256,
        ).order_by(TripletRow.reference, TripletRow.positive, TripletRow.negative)
        return self._frame(query, "created_at")

    def counts(self) -> dict[str, int]:
        """How many boxes and triplets are stored."""
        with database_errors(self.url, "read"), self._engine.connect() as connection:
            return {
                "boxes": connection.execute(select(func.count()).select_from(BoxRow)).scalar_one(),
                "triplets": connection.execute(
                    select(func.count()).select_from(TripletRow)
                ).scalar_one(),
            }

    # -- following the catalog -------------------------------------------------------
    def follow_ingest(
        self, store: Store, version: str, previous_version: str | None
    ) -> dict[str, int]:
        """Bring the annotations along with the ingest that published ``version``: rows
        whose bytes were never recorded get those of the manifest it replaced (what they
        were drawn on), then annotations of photos that left the catalog move to the id
        that now holds their bytes (:func:`find_renames`). Safe to repeat: a run that
        failed after publishing is caught up by the next. Returns what was done."""
        current = read_manifest(store, version)
        if current is None:
            return {"recorded": 0, "boxes": 0, "triplets": 0}
        previous = current
        if previous_version and store.exists(manifest_key(previous_version)):
            previous = store.read_parquet(manifest_key(previous_version))
        recorded = self.record_missing_bytes(previous)
        return {"recorded": recorded, **self.follow_renames(find_renames(current))}

    def follow_renames(self, renames: Mapping[str, str]) -> dict[str, int]:
        """Move annotations from old image ids to new ones with the same bytes (a photo
        renamed or moved in the source: ingest removed one id and added another holding
        the same sha256). A box moves unless the new id has one already (that one wins,
        the old goes with gc); a triplet naming an old id names the new one (merged when
        that triplet exists). Returns how many boxes and triplets moved."""
        if not renames:
            return {"boxes": 0, "triplets": 0}
        with database_errors(self.url, "write to"), self._writer.begin() as connection:
            boxes = move_boxes(connection, renames)
            triplets = rename_triplets(connection, renames)
        return {"boxes": boxes, "triplets": triplets}

    def record_missing_bytes(self, manifest: pa.Table) -> int:
        """Record, for annotations whose bytes were never recorded (written before schema
        revision 0002, or by a caller that named none), the bytes ``manifest`` holds for
        their images. Ingest calls it with the manifest it replaces — the bytes the
        annotation was most likely drawn on — so a photo replaced by this ingest makes its
        box stale. Returns how many rows got bytes."""
        known = {
            r["image_id"]: r["sha256"]
            for r in manifest.select(["image_id", "sha256", "status"]).to_pylist()
            if r["status"] == "ok"
        }
        with database_errors(self.url, "write to"), self._writer.begin() as connection:
            boxes = fill_box_bytes(connection, known)
            triplets = fill_triplet_bytes(connection, known)
        return boxes + triplets

    def unheld(self, held: HeldBytes) -> Unheld:
        """Boxes and triplets naming bytes ``held`` does not hold (for a triplet: any of its
        three images): what gc deletes once no retained manifest holds them."""
        return unheld_rows(self.boxes(), self.triplets(), held)

    def forget(self, unheld: Unheld) -> None:
        """Delete the boxes and triplets :meth:`unheld` listed — a privacy deletion: on
        SQLite the freed bytes are overwritten and the write-ahead log emptied, so the rows
        are not left readable in the file (PostgreSQL: they go with its next VACUUM)."""
        table = TripletRow.__table__
        sqlite = self.url.get_backend_name() == "sqlite"
        with database_errors(self.url, "write to"), self._writer.begin() as connection:
            if sqlite:  # a compile-time default in some builds only
                connection.exec_driver_sql("PRAGMA secure_delete = ON")
            for chunk in in_chunks(unheld.boxes):
                connection.execute(delete(BoxRow).where(BoxRow.image_id.in_(chunk)))
            if unheld.triplets:
                connection.execute(
                    delete(TripletRow).where(
                        *(table.c[c] == bindparam(f"b_{c}") for c in TRIPLET_IDS)
                    ),
                    [
                        {f"b_{c}": v for c, v in zip(TRIPLET_IDS, t, strict=True)}
                        for t in unheld.triplets
                    ],
                )
        if sqlite and (unheld.boxes or unheld.triplets):
            raw = self._engine.raw_connection()  # autocommit: no transaction holds the log
            try:
                raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                raw.close()

    def _frame(self, query: Any, time_column: str) -> pd.DataFrame:
        with database_errors(self.url, "read"), self._engine.connect() as connection:
            result = connection.execute(query)
            frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        frame[time_column] = pd.to_datetime(frame[time_column], utc=True)
        return frame

    # -- snapshots --------------------------------------------------------------------
    def export_snapshot(self, store: Store, kind: str = "boxes") -> Snapshot:
        """Freeze the current boxes (or triplets) as Parquet under ``annotations/snapshots/``.

        Rows are joined with the current manifest (sha256, width, height): a model that
        records the snapshot's key and digest says exactly which annotations of which image
        bytes it saw. Annotations of images no longer usable are left out (``left_out``), and
        so are stale ones, drawn on other bytes than the photo has now (``stale``): a box
        of the old photo would teach the locator a wrong box for the new one. The key
        is the digest of the sorted rows, so exporting unchanged annotations again writes
        nothing and returns the same key.
        """
        if kind not in SNAPSHOT_KINDS:
            raise InputError(f"snapshot kind {kind!r}: choose {' or '.join(SNAPSHOT_KINDS)}")
        catalog = CatalogIndex(read_manifest(store))
        annotations = self.boxes() if kind == "boxes" else self.triplets()
        return write_snapshot(store, kind, annotations, catalog)


def open_annotations(settings: Settings) -> AnnotationDatabase:
    """The annotations database the settings name (see :func:`database_url_for`)."""
    return AnnotationDatabase(database_url_for(settings))


def existing_annotations(settings: Settings) -> AnnotationDatabase | None:
    """The annotations database when one can hold annotations: a configured URL, or the
    default SQLite file of a local store once it exists; else None.

    Why not :func:`open_annotations`: stages that only *follow* annotations (ingest carrying
    them across renames, gc deleting those of removed photos) must neither create an empty
    database in the store nor refuse an S3 store that has none — there is nothing to do."""
    if not settings.database_url and urlparse(settings.store_url).scheme != "file":
        return None
    url = database_url_for(settings)
    if not settings.database_url and not Path(url.database or "").exists():
        return None
    return AnnotationDatabase(url)
