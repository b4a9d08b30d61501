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
from collections.abc import Collection, Iterator, Mapping, Sequence
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
    Connection,
    DateTime,
    Engine,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    make_url,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tiefvision_core.annotations.files import (
    Box,
    CatalogImage,
    CatalogIndex,
    Refusal,
    box_problem,
    read_box_file,
    read_triplet_file,
)
from tiefvision_core.catalog.ingest import find_renames, read_manifest
from tiefvision_core.errors import ConfigError, InputError, StorageUnreachable
from tiefvision_core.storage.layout import SNAPSHOT_PREFIX, manifest_key

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
    "Unheld",
    "alembic_config",
    "database_url_for",
    "existing_annotations",
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
    height); right and bottom are exclusive edges. ``sha256``: the bytes it was drawn on
    (NULL: not recorded, written before revision 0002 or by a caller that named none)."""

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
    sha256: Mapped[str | None] = mapped_column(String(64))


class TripletRow(Base):
    """``positive`` is more similar to ``reference`` than ``negative`` is; ``<role>_sha256``
    the bytes each image had when the triplet was made (NULL: not recorded)."""

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
    reference_sha256: Mapped[str | None] = mapped_column(String(64))
    positive_sha256: Mapped[str | None] = mapped_column(String(64))
    negative_sha256: Mapped[str | None] = mapped_column(String(64))


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


@dataclass(frozen=True)
class Snapshot:
    """A frozen, content-addressed copy of the annotations on storage. ``left_out`` counts
    annotations of images that are no longer usable in the current manifest, ``stale``
    those drawn on other bytes than the photo has now (left out until confirmed)."""

    key: str
    digest: str
    rows: int
    kind: str
    left_out: int = 0
    stale: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


Triple = tuple[str, str, str]
#: (image_id, sha256) pairs a catalog holds, and their image ids alone.
HeldBytes = tuple[Collection[tuple[str, str]], Collection[str]]


@dataclass(frozen=True)
class Unheld:
    """Annotations naming bytes that no retained manifest holds any more: what gc deletes
    (a photo removed from the catalog leaves nothing behind once the retention passed)."""

    boxes: tuple[str, ...] = ()
    triplets: tuple[Triple, ...] = ()


def _held(image_id: str, sha256: str | None, held: HeldBytes) -> bool:
    """Whether a catalog holds an annotated image: its recorded bytes, or (none recorded)
    its id."""
    pairs, ids = held
    return image_id in ids if sha256 is None else (image_id, sha256) in pairs


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


Shas = tuple[str | None, str | None, str | None]
_TRIPLET_IDS = ("reference", "positive", "negative")
_TRIPLET_SHAS = tuple(f"{name}_sha256" for name in _TRIPLET_IDS)


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
    return dict(zip((*_TRIPLET_IDS, *_TRIPLET_SHAS), (*triple, *shas), strict=True))


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
        with self._errors("write to"), self._writer.begin() as connection:
            stored: dict[str, tuple[Box, str, str | None]] = {}
            for chunk in _chunks([image_id for image_id, _, _ in items]):
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
                row.sha256,
            )

    def delete_box(self, image_id: str) -> bool:
        """Forget the box of ``image_id``; ``True`` when there was one."""
        with self._errors("write to"), self._writer.begin() as connection:
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
        ids, shas = _TRIPLET_IDS, _TRIPLET_SHAS
        now = datetime.now(UTC)
        with self._errors("write to"), self._writer.begin() as connection:
            stored: dict[Triple, Shas] = {}
            for chunk in _chunks(sorted({t[0] for t, _ in items})):
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
        with self._errors("write to"), self._writer.begin() as connection:
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
        with self._errors("read"), self._engine.connect() as connection:
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
        with self._errors("write to"), self._writer.begin() as connection:
            boxes = _move_boxes(connection, renames)
            triplets = _rename_triplets(connection, renames)
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
        with self._errors("write to"), self._writer.begin() as connection:
            boxes = _fill_box_bytes(connection, known)
            triplets = _fill_triplet_bytes(connection, known)
        return boxes + triplets

    def unheld(self, held: HeldBytes) -> Unheld:
        """Boxes and triplets naming bytes ``held`` does not hold (for a triplet: any of its
        three images): what gc deletes once no retained manifest holds them."""
        boxes = self.boxes()
        gone = tuple(
            str(i)
            for i, sha in zip(boxes["image_id"], boxes["sha256"], strict=True)
            if not _held(i, _recorded(sha), held)
        )
        triplets = self.triplets().to_dict("records")
        dead = tuple(
            (r["reference"], r["positive"], r["negative"])
            for r in triplets
            if not all(_held(r[i], _recorded(r[s]), held) for i, s in _ROLES)
        )
        return Unheld(gone, dead)

    def forget(self, unheld: Unheld) -> None:
        """Delete the boxes and triplets :meth:`unheld` listed — a privacy deletion: on
        SQLite the freed bytes are overwritten and the write-ahead log emptied, so the rows
        are not left readable in the file (PostgreSQL: they go with its next VACUUM)."""
        table = TripletRow.__table__
        sqlite = self.url.get_backend_name() == "sqlite"
        with self._errors("write to"), self._writer.begin() as connection:
            if sqlite:  # a compile-time default in some builds only
                connection.exec_driver_sql("PRAGMA secure_delete = ON")
            for chunk in _chunks(unheld.boxes):
                connection.execute(delete(BoxRow).where(BoxRow.image_id.in_(chunk)))
            if unheld.triplets:
                connection.execute(
                    delete(TripletRow).where(
                        *(table.c[c] == bindparam(f"b_{c}") for c in _TRIPLET_IDS)
                    ),
                    [
                        {f"b_{c}": v for c, v in zip(_TRIPLET_IDS, t, strict=True)}
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
        bytes it saw. Annotations of images no longer usable are left out (``left_out``), and
        so are stale ones, drawn on other bytes than the photo has now (``stale``): a box
        of the old photo would teach the locator a wrong box for the new one. The key
        is the digest of the sorted rows, so exporting unchanged annotations again writes
        nothing and returns the same key.
        """
        if kind not in SNAPSHOT_KINDS:
            raise InputError(f"snapshot kind {kind!r}: choose {' or '.join(SNAPSHOT_KINDS)}")
        catalog = CatalogIndex(read_manifest(store))
        rows, left_out, stale = (
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
            f"{SNAPSHOT_PREFIX}{kind}-{digest[:16]}.parquet",
            digest,
            len(rows),
            kind,
            left_out,
            stale,
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


def _drawn_on_other_bytes(recorded: object, image: CatalogImage) -> bool:
    """A recorded sha256 (None or NaN: not recorded) that is not the image's current one."""
    return isinstance(recorded, str) and recorded != image.sha256


def _box_rows(frame: pd.DataFrame, catalog: CatalogIndex) -> tuple[list[dict], int, int]:
    """Snapshot rows of usable, fresh boxes; (rows, left out as unusable, left out as stale)."""
    rows, left_out, stale = [], 0, 0
    for record in frame.to_dict("records"):
        image = catalog.get(record["image_id"])
        box = Box(
            int(record["left"]), int(record["top"]), int(record["right"]), int(record["bottom"])
        )
        if image is None or box_problem(box, image):
            left_out += 1
            continue
        if _drawn_on_other_bytes(record["sha256"], image):
            stale += 1
            continue
        rows.append(
            {"image_id": image.image_id, "sha256": image.sha256}
            | {"width": image.width, "height": image.height}
            | box._asdict()
            | {"source": record["source"]}
        )
    return sorted(rows, key=lambda row: row["image_id"]), left_out, stale


def _triplet_rows(frame: pd.DataFrame, catalog: CatalogIndex) -> tuple[list[dict], int, int]:
    """Snapshot rows of triplets whose three images are usable and unchanged since;
    (rows, left out as unusable, left out as stale)."""
    rows, left_out, stale = [], 0, 0
    names = _TRIPLET_IDS
    for record in frame.to_dict("records"):
        images = [image for name in names if (image := catalog.get(record[name])) is not None]
        if len(images) < len(names):
            left_out += 1
            continue
        recorded = (record[f"{name}_sha256"] for name in names)
        if any(map(_drawn_on_other_bytes, recorded, images)):
            stale += 1
            continue
        row: dict[str, object] = {"source": record["source"]}
        for name, image in zip(names, images, strict=True):
            row |= {name: image.image_id, f"{name}_sha256": image.sha256}
        rows.append(row)
    rows.sort(key=lambda row: (row["reference"], row["positive"], row["negative"]))
    return rows, left_out, stale


_ROLES = tuple(zip(_TRIPLET_IDS, _TRIPLET_SHAS, strict=True))


def _recorded(value: object) -> str | None:
    """A sha256 cell as read into a frame: a string, or None/NaN when not recorded."""
    return value if isinstance(value, str) else None


def _move_boxes(connection: Connection, renames: Mapping[str, str]) -> int:
    table = BoxRow.__table__
    taken: set[str] = set()
    for chunk in _chunks(sorted(renames.values())):
        query = select(table.c.image_id).where(table.c.image_id.in_(chunk))
        taken.update(connection.execute(query).scalars())
    moved = 0
    for old, new in sorted(renames.items()):
        if new not in taken:
            move = update(BoxRow).where(table.c.image_id == old).values(image_id=new)
            moved += connection.execute(move).rowcount
    return moved


def _rename_triplets(connection: Connection, renames: Mapping[str, str]) -> int:
    table = TripletRow.__table__
    columns = [table.c[c] for c in _TRIPLET_IDS]
    named: dict[int, Triple] = {}
    for chunk in _chunks(sorted(renames)):
        query = select(table.c.id, *columns).where(or_(*(c.in_(chunk) for c in columns)))
        named.update((row[0], (row[1], row[2], row[3])) for row in connection.execute(query))
    for row_id, triple in sorted(named.items()):
        target = tuple(renames.get(image_id, image_id) for image_id in triple)
        match = and_(*(c == v for c, v in zip(columns, target, strict=True)))
        if connection.execute(select(table.c.id).where(match)).first() is None:
            values = dict(zip(_TRIPLET_IDS, target, strict=True))
            connection.execute(update(TripletRow).where(table.c.id == row_id).values(values))
        else:  # the renamed triplet is stored already: one row is enough
            connection.execute(delete(TripletRow).where(table.c.id == row_id))
    return len(named)


def _fill_box_bytes(connection: Connection, known: Mapping[str, str]) -> int:
    table = BoxRow.__table__
    ids = connection.execute(select(table.c.image_id).where(table.c.sha256.is_(None))).scalars()
    values = [{"b_id": i, "b_sha": known[i]} for i in ids if i in known]
    if values:
        query = update(BoxRow).where(table.c.image_id == bindparam("b_id"))
        connection.execute(query.values(sha256=bindparam("b_sha")), values)
    return len(values)


def _fill_triplet_bytes(connection: Connection, known: Mapping[str, str]) -> int:
    table = TripletRow.__table__
    filled = 0
    for name, column in _ROLES:
        query = select(table.c.id, table.c[name]).where(table.c[column].is_(None))
        values = [
            {"b_id": row_id, "b_sha": known[image_id]}
            for row_id, image_id in connection.execute(query)
            if image_id in known
        ]
        if values:
            fill = update(TripletRow).where(table.c.id == bindparam("b_id"))
            connection.execute(fill.values({column: bindparam("b_sha")}), values)
        filled += len(values)
    return filled


def read_snapshot(store: Store, key: str) -> pd.DataFrame:
    """The rows of a snapshot written by :meth:`AnnotationStore.export_snapshot`."""
    return store.read_parquet(key).to_pandas()


def _is_connection_error(exc: DBAPIError) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, OperationalError | InterfaceError)


def open_annotations(settings: Settings) -> AnnotationStore:
    """The annotations database the settings name (see :func:`database_url_for`)."""
    return AnnotationStore(database_url_for(settings))


def existing_annotations(settings: Settings) -> AnnotationStore | None:
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
    return AnnotationStore(url)
