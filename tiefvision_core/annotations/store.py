"""Annotations — one product box per image, similarity triplets — in a SQL database.

Why SQL when everything else is Parquet on storage: people edit annotations one at a time
(the box and triplet editors) while pipelines read them; that needs row updates, uniqueness
and concurrent writers, which a database gives and a folder of immutable files does not.
What a model was trained on is frozen the other way round: :meth:`AnnotationStore.
export_snapshot` writes a content-addressed Parquet snapshot to storage and the model
records its key and digest.

SQLite file by default (``annotations.sqlite`` under a local store), PostgreSQL by URL
(``postgresql+psycopg://…``). The schema is migrated with Alembic whenever a store is
opened, so nobody runs ``alembic`` by hand; concurrent opens serialise on a lock (SQLite:
an immediate transaction, PostgreSQL: an advisory lock) and the loser finds the schema at
head. Passwords never reach a message or a log: URLs are always rendered with
``hide_password``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import pandas as pd
import pyarrow as pa
from sqlalchemy import (
    URL,
    CheckConstraint,
    DateTime,
    Engine,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    make_url,
    select,
    text,
)
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tiefvision_core.annotations.files import (
    Box,
    CatalogIndex,
    Refusal,
    box_problem,
    read_box_file,
    read_triplet_file,
)
from tiefvision_core.catalog.ingest import read_manifest
from tiefvision_core.errors import ConfigError, InputError, StorageUnreachable
from tiefvision_core.storage.layout import SNAPSHOT_PREFIX

if TYPE_CHECKING:
    from tiefvision_core.config import Settings
    from tiefvision_core.storage.stores import Store

__all__ = [
    "DEFAULT_SQLITE_NAME",
    "SNAPSHOT_PREFIX",
    "AnnotationStore",
    "Base",
    "Box",
    "BoxRecord",
    "BoxRow",
    "ImportReport",
    "Refusal",
    "Snapshot",
    "TripletRow",
    "alembic_config",
    "database_url_for",
    "head_revision",
    "open_annotations",
    "read_snapshot",
]

log = logging.getLogger(__name__)

DEFAULT_SQLITE_NAME = "annotations.sqlite"
SNAPSHOT_KINDS = ("boxes", "triplets")
#: Bump when the meaning of a snapshot's rows changes: the digest then changes too.
_SNAPSHOT_FORMAT = 1
#: pg_advisory_xact_lock key that serialises schema migrations (any fixed 64-bit number).
_MIGRATION_LOCK = 0x7469_6566_7669_73
_WRITE = "tiefvision_write"
_CHUNK = 500
_URL_HELP = "use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"


# -- schema -------------------------------------------------------------------------------
class Base(DeclarativeBase):
    """Declarative base; constraint names are fixed so migrations can address them."""

    metadata = MetaData(
        naming_convention={
            "pk": "pk_%(table_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        }
    )


class BoxRow(Base):
    """The product box of one image, in pixels of the oriented image (manifest width ×
    height); right and bottom are exclusive edges."""

    __tablename__ = "boxes"
    __table_args__ = (
        CheckConstraint('"left" >= 0 AND "top" >= 0', name="origin"),
        CheckConstraint('"right" > "left" AND "bottom" > "top"', name="area"),
    )

    image_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    left: Mapped[int]
    top: Mapped[int]
    right: Mapped[int]
    bottom: Mapped[int]
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TripletRow(Base):
    """``positive`` is more similar to ``reference`` than ``negative`` is."""

    __tablename__ = "triplets"
    __table_args__ = (
        UniqueConstraint("reference", "positive", "negative"),
        CheckConstraint(
            "reference <> positive AND reference <> negative AND positive <> negative",
            name="distinct",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(255))
    positive: Mapped[str] = mapped_column(String(255))
    negative: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# -- results ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BoxRecord:
    image_id: str
    box: Box
    source: str
    created_at: datetime
    updated_at: datetime


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


@dataclass(frozen=True)
class Snapshot:
    """A frozen, content-addressed copy of the annotations on storage. ``left_out`` counts
    annotations of images that are no longer usable in the current manifest."""

    key: str
    digest: str
    rows: int
    kind: str
    left_out: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# -- URLs ---------------------------------------------------------------------------------
def _parse_url(url: str | URL) -> URL:
    """A SQLAlchemy URL for a supported backend; ``postgresql://`` means psycopg 3."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        # the value itself may hold a password: never echo it
        raise ConfigError(
            f"invalid setting TIEFVISION_DATABASE_URL / --database: not a URL; {_URL_HELP}"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"annotations database {parsed.render_as_string(hide_password=True)}: "
            f"{parsed.get_backend_name()} is not supported; {_URL_HELP}"
        )
    return parsed


def database_url_for(settings: Settings) -> URL:
    """``settings.database_url``, else a SQLite file under a local store.

    SQLite cannot live in S3 (it needs file locks and in-place writes), so an S3 store
    without a database URL is a configuration error, reported before anything starts.
    """
    if settings.database_url:
        return _parse_url(settings.database_url)
    parsed = urlparse(settings.store_url)
    if parsed.scheme != "file":
        raise ConfigError(
            f"the store {settings.store_url} is on S3, where the annotations database cannot "
            "live: set TIEFVISION_DATABASE_URL (or --database) to a PostgreSQL URL such as "
            "postgresql+psycopg://USER@HOST/tiefvision, or to sqlite:///PATH on a local disk"
        )
    path = Path(unquote(parsed.path)) / DEFAULT_SQLITE_NAME
    return URL.create("sqlite", database=str(path))


# -- engine and migrations -----------------------------------------------------------------
#: How long an SQLite connection waits for another's lock before "database is locked".
_SQLITE_BUSY_S = 30


def _sqlite_connect(dbapi_connection: Any, _record: object) -> None:
    # Take transaction control from Python's sqlite3 (which would BEGIN only before DML) so
    # _sqlite_begin decides: writers BEGIN IMMEDIATE and queue on busy_timeout instead of
    # failing with "database is locked" when they upgrade a read lock.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_S * 1000}")
    _enable_wal(cursor)  # readers never block the one writer
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch the database file to WAL (kept in the file: a no-op once done).

    Why a retry loop: the switch needs the file to itself, and SQLite answers "database is
    locked" at once instead of waiting on busy_timeout while another connection is opening
    the same new file (6 of 60 trials of six concurrent first opens failed so).
    """
    import sqlite3

    deadline = time.monotonic() + _SQLITE_BUSY_S
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _sqlite_begin(connection: Any) -> None:
    immediate = connection.get_execution_options().get(_WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _make_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": _SQLITE_BUSY_S})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})


def alembic_config(connection: Any = None) -> Any:
    """An Alembic config built in code: scripts inside this package, no alembic.ini.

    ``connection`` is what migrations run on (env.py uses it, with its transaction).
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "tiefvision_core.annotations:migrations")
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest schema revision this code knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we write is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _shorten(value: str, width: int) -> str:
    return value if len(value) <= width else value[: width - 3] + "..."


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- the store ----------------------------------------------------------------------------
class AnnotationStore:
    """Boxes and triplets in one database; opening it brings the schema to head."""

    def __init__(self, url: str | URL, *, migrate: bool = True) -> None:
        self.url = _parse_url(url)
        self._engine = _make_engine(self.url)
        self._writer = self._engine.execution_options(**{_WRITE: True})
        if migrate:
            with self._errors("open"):
                self._upgrade()

    # -- plumbing ---------------------------------------------------------------------
    @property
    def display_url(self) -> str:
        """The URL for messages and logs: the password is always ``***``."""
        return self.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"AnnotationStore({self.display_url})"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for tools (new migrations, ad-hoc queries)."""
        return self._engine

    def __enter__(self) -> AnnotationStore:
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

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Database failures become one line naming the database, never its password."""
        from alembic.util import CommandError

        try:
            yield
        except DBAPIError as exc:
            if not exc.connection_invalidated and not _is_connection_error(exc):
                raise
            detail = str(exc.orig or exc).strip().splitlines()[0]
            if self.url.password:
                detail = detail.replace(str(self.url.password), "***")
            raise StorageUnreachable(
                f"cannot {doing} the annotations database {self.display_url} ({detail}): "
                "check TIEFVISION_DATABASE_URL and that the database server is running"
            ) from None
        except CommandError as exc:
            if "Can't locate revision" not in str(exc):
                raise
            raise ConfigError(
                f"the annotations database {self.display_url} has a schema this version of "
                f"TiefVision does not know ({exc}): it was written by a newer version; "
                "upgrade TiefVision"
            ) from None

    def _upgrade(self) -> None:
        from alembic import command

        with self._writer.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                )
            command.upgrade(alembic_config(connection), "head")
        log.debug("annotations database %s: schema at head", self.display_url)

    def schema_revision(self) -> str | None:
        """The schema revision the database is at (``alembic current``)."""
        from alembic.runtime.migration import MigrationContext

        with self._errors("read"), self._engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    # -- boxes ------------------------------------------------------------------------
    def import_boxes(self, path: str | Path, manifest: pa.Table | None) -> ImportReport:
        """Import a box CSV or COCO JSON file, validated against ``manifest``.

        Valid rows are upserted (a new box for an image replaces its old one); invalid ones
        are refused with their line. Raises :class:`InputError` only when the file as a
        whole is unusable, or when nothing was ingested yet (``manifest`` is ``None``).
        """
        parsed = read_box_file(path, CatalogIndex(manifest))
        report = ImportReport("boxes", parsed.source, refused=list(parsed.refused))
        items = [(row.image_id, row.box) for row in parsed.rows]
        report.imported, report.updated, report.unchanged = self._upsert_boxes(items, parsed.source)
        return report

    def _upsert_boxes(self, items: Sequence[tuple[str, Box]], source: str) -> tuple[int, int, int]:
        table = BoxRow.__table__
        coords = [table.c.left, table.c.top, table.c.right, table.c.bottom]
        now = datetime.now(UTC)
        with self._errors("write to"), self._writer.begin() as connection:
            stored: dict[str, tuple[Box, str]] = {}
            for chunk in _chunks([image_id for image_id, _ in items]):
                query = select(table.c.image_id, *coords, table.c.source).where(
                    table.c.image_id.in_(chunk)
                )
                for row in connection.execute(query):
                    stored[row[0]] = (Box(*row[1:5]), row[5])
            changes = [(i, box) for i, box in items if stored.get(i) != (box, source)]
            if changes:
                insert = self._insert(table)
                columns = ("left", "top", "right", "bottom", "source", "updated_at")
                upsert = insert.on_conflict_do_update(
                    index_elements=[table.c.image_id],
                    set_={name: insert.excluded[name] for name in columns},
                )
                connection.execute(
                    upsert,
                    [
                        {"image_id": i, **box._asdict(), "source": source}
                        | {"created_at": now, "updated_at": now}
                        for i, box in changes
                    ],
                )
        updated = sum(1 for i, _ in changes if i in stored)
        return len(changes) - updated, updated, len(items) - len(changes)

    def set_box(
        self,
        image_id: str,
        box: Sequence[int],
        source: str = "editor",
        *,
        manifest: pa.Table | None = None,
    ) -> bool:
        """Store the product box of one image (replacing any); ``True`` when it is new.

        With ``manifest``, ``image_id`` may also be a relative path and the box must lie
        inside the image; without it only the box's own shape is checked.
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
        else:
            left, top, right, bottom = values
            problem = None
            if right <= left or bottom <= top or left < 0 or top < 0:
                problem = f"box {left},{top},{right},{bottom} is empty or starts below 0"
        if problem:
            raise InputError(f"image {image_id!r}: {problem}")
        new, _updated, _same = self._upsert_boxes([(image_id, values)], source)
        return new == 1

    def get_box(self, image_id: str) -> BoxRecord | None:
        """The stored box of ``image_id``, or ``None``."""
        with self._errors("read"), Session(self._engine) as session:
            row = session.get(BoxRow, image_id)
            if row is None:
                return None
            return BoxRecord(
                row.image_id,
                Box(row.left, row.top, row.right, row.bottom),
                row.source,
                _utc(row.created_at),
                _utc(row.updated_at),
            )

    def delete_box(self, image_id: str) -> bool:
        """Forget the box of ``image_id``; ``True`` when there was one."""
        with self._errors("write to"), self._writer.begin() as connection:
            result = connection.execute(delete(BoxRow).where(BoxRow.image_id == image_id))
            return result.rowcount > 0

    def boxes(self) -> pd.DataFrame:
        """Every box: image_id, left, top, right, bottom, source, updated_at (UTC)."""
        query = select(
            BoxRow.image_id,
            BoxRow.left,
            BoxRow.top,
            BoxRow.right,
            BoxRow.bottom,
            BoxRow.source,
            BoxRow.updated_at,
        ).order_by(BoxRow.image_id)
        return self._frame(query, "updated_at")

    # -- triplets ---------------------------------------------------------------------
    def import_triplets(self, path: str | Path, manifest: pa.Table | None) -> ImportReport:
        """Import a triplet CSV ``reference,positive,negative`` validated against
        ``manifest``; triplets already stored count as unchanged."""
        parsed = read_triplet_file(path, CatalogIndex(manifest))
        report = ImportReport("triplets", parsed.source, refused=list(parsed.refused))
        triples = [(row.reference, row.positive, row.negative) for row in parsed.rows]
        report.imported = self._insert_triplets(triples, parsed.source)
        report.unchanged = len(triples) - report.imported
        return report

    def _insert_triplets(self, triples: Sequence[tuple[str, str, str]], source: str) -> int:
        table = TripletRow.__table__
        now = datetime.now(UTC)
        with self._errors("write to"), self._writer.begin() as connection:
            stored: set[tuple[str, str, str]] = set()
            for chunk in _chunks(sorted({t[0] for t in triples})):
                query = select(table.c.reference, table.c.positive, table.c.negative).where(
                    table.c.reference.in_(chunk)
                )
                stored.update((r, p, n) for r, p, n in connection.execute(query))
            new = [t for t in triples if t not in stored]
            if new:
                insert = self._insert(table).on_conflict_do_nothing(
                    index_elements=[table.c.reference, table.c.positive, table.c.negative]
                )
                names = ("reference", "positive", "negative")
                connection.execute(
                    insert,
                    [
                        dict(zip(names, t, strict=True)) | {"source": source, "created_at": now}
                        for t in new
                    ],
                )
        return len(new)

    def add_triplet(
        self,
        reference: str,
        positive: str,
        negative: str,
        source: str = "editor",
        *,
        manifest: pa.Table | None = None,
    ) -> bool:
        """Store one triplet; ``True`` when it is new. With ``manifest`` the images may be
        named by path and must be usable in the catalog."""
        ids = [reference, positive, negative]
        if manifest is not None:
            catalog = CatalogIndex(manifest)
            for n, name in enumerate(ids):
                image = catalog.resolve(name)
                if isinstance(image, str):
                    raise InputError(f"image {name!r}: {image}")
                ids[n] = image.image_id
        if len(set(ids)) < 3:
            raise InputError("reference, positive and negative must be three different images")
        return self._insert_triplets([(ids[0], ids[1], ids[2])], source) == 1

    def delete_triplet(self, reference: str, positive: str, negative: str) -> bool:
        """Forget one triplet; ``True`` when it was stored."""
        query = delete(TripletRow).where(
            TripletRow.reference == reference,
            TripletRow.positive == positive,
            TripletRow.negative == negative,
        )
        with self._errors("write to"), self._writer.begin() as connection:
            return connection.execute(query).rowcount > 0

    def triplets(self) -> pd.DataFrame:
        """Every triplet: reference, positive, negative, source, created_at (UTC)."""
        query = select(
            TripletRow.reference,
            TripletRow.positive,
            TripletRow.negative,
            TripletRow.source,
            TripletRow.created_at,
        ).order_by(TripletRow.reference, TripletRow.positive, TripletRow.negative)
        return self._frame(query, "created_at")

    def counts(self) -> dict[str, int]:
        """How many boxes and triplets are stored."""
        with self._errors("read"), self._engine.connect() as connection:
            return {
                "boxes": connection.execute(select(func.count()).select_from(BoxRow)).scalar_one(),
                "triplets": connection.execute(
                    select(func.count()).select_from(TripletRow)
                ).scalar_one(),
            }

    def _frame(self, query: Any, time_column: str) -> pd.DataFrame:
        with self._errors("read"), self._engine.connect() as connection:
            result = connection.execute(query)
            frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        frame[time_column] = pd.to_datetime(frame[time_column], utc=True)
        return frame

    # -- snapshots --------------------------------------------------------------------
    def export_snapshot(self, store: Store, kind: str = "boxes") -> Snapshot:
        """Freeze the current boxes (or triplets) as Parquet under ``annotations/snapshots/``.

        Rows are joined with the current manifest (sha256, width, height): a model that
        records the snapshot's key and digest says exactly which annotations of which image
        bytes it saw. Annotations of images no longer usable are left out (counted). The key
        is the digest of the sorted rows, so exporting unchanged annotations again writes
        nothing and returns the same key.
        """
        if kind not in SNAPSHOT_KINDS:
            raise InputError(f"snapshot kind {kind!r}: choose {' or '.join(SNAPSHOT_KINDS)}")
        catalog = CatalogIndex(read_manifest(store))
        rows, left_out = (
            _box_rows(self.boxes(), catalog)
            if kind == "boxes"
            else _triplet_rows(self.triplets(), catalog)
        )
        schema = _SNAPSHOT_SCHEMAS[kind]
        canonical = json.dumps(
            {
                "format": _SNAPSHOT_FORMAT,
                "kind": kind,
                "columns": schema.names,
                "rows": [[row[name] for name in schema.names] for row in rows],
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        snapshot = Snapshot(
            f"{SNAPSHOT_PREFIX}{kind}-{digest[:16]}.parquet", digest, len(rows), kind, left_out
        )
        if not store.exists(snapshot.key):
            meta = {"format": _SNAPSHOT_FORMAT, "kind": kind, "digest": digest, "rows": len(rows)}
            table = pa.Table.from_pylist(rows, schema=schema).replace_schema_metadata(
                {"tiefvision.snapshot": json.dumps(meta)}
            )
            store.write_parquet(snapshot.key, table)
        return snapshot


_SNAPSHOT_SCHEMAS = {
    "boxes": pa.schema(
        [
            ("image_id", pa.string()),
            ("sha256", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("left", pa.int32()),
            ("top", pa.int32()),
            ("right", pa.int32()),
            ("bottom", pa.int32()),
            ("source", pa.string()),
        ]
    ),
    "triplets": pa.schema(
        [
            ("reference", pa.string()),
            ("positive", pa.string()),
            ("negative", pa.string()),
            ("reference_sha256", pa.string()),
            ("positive_sha256", pa.string()),
            ("negative_sha256", pa.string()),
            ("source", pa.string()),
        ]
    ),
}


def _box_rows(frame: pd.DataFrame, catalog: CatalogIndex) -> tuple[list[dict], int]:
    rows, left_out = [], 0
    for record in frame.to_dict("records"):
        image = catalog.get(record["image_id"])
        box = Box(
            int(record["left"]), int(record["top"]), int(record["right"]), int(record["bottom"])
        )
        if image is None or box_problem(box, image):
            left_out += 1
            continue
        rows.append(
            {"image_id": image.image_id, "sha256": image.sha256}
            | {"width": image.width, "height": image.height}
            | box._asdict()
            | {"source": record["source"]}
        )
    return sorted(rows, key=lambda row: row["image_id"]), left_out


def _triplet_rows(frame: pd.DataFrame, catalog: CatalogIndex) -> tuple[list[dict], int]:
    rows, left_out = [], 0
    names = ("reference", "positive", "negative")
    for record in frame.to_dict("records"):
        images = [image for name in names if (image := catalog.get(record[name])) is not None]
        if len(images) < len(names):
            left_out += 1
            continue
        row: dict[str, object] = {"source": record["source"]}
        for name, image in zip(names, images, strict=True):
            row |= {name: image.image_id, f"{name}_sha256": image.sha256}
        rows.append(row)
    rows.sort(key=lambda row: (row["reference"], row["positive"], row["negative"]))
    return rows, left_out


def read_snapshot(store: Store, key: str) -> pd.DataFrame:
    """The rows of a snapshot written by :meth:`AnnotationStore.export_snapshot`."""
    return store.read_parquet(key).to_pandas()


def _is_connection_error(exc: DBAPIError) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, OperationalError | InterfaceError)


def open_annotations(settings: Settings) -> AnnotationStore:
    """The annotations database the settings name (see :func:`database_url_for`)."""
    return AnnotationStore(database_url_for(settings))
