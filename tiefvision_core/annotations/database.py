"""Where the annotations database is and how it is opened: SQLite file by default
(``annotations.sqlite`` under a local store), PostgreSQL by URL (``postgresql+psycopg://…``).

The schema is migrated with Alembic whenever a store is opened (:func:`upgrade_schema`), so
nobody runs ``alembic`` by hand; concurrent opens serialise on a lock (SQLite: an immediate
transaction, PostgreSQL: an advisory lock) and the loser finds the schema at head.
Passwords never reach a message or a log: URLs are always rendered with ``hide_password``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from sqlalchemy import URL, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError

from tiefvision_core.errors import ConfigError, StorageUnreachable

if TYPE_CHECKING:
    from tiefvision_core.config import Settings

__all__ = [
    "DEFAULT_SQLITE_NAME",
    "WRITE_OPTION",
    "alembic_config",
    "database_errors",
    "database_url_for",
    "head_revision",
    "make_engine",
    "parse_database_url",
    "upgrade_schema",
]

DEFAULT_SQLITE_NAME = "annotations.sqlite"
#: pg_advisory_xact_lock key that serialises schema migrations (any fixed 64-bit number).
_MIGRATION_LOCK = 0x7469_6566_7669_73
#: The execution option of an engine whose transactions write (SQLite: BEGIN IMMEDIATE).
WRITE_OPTION = "tiefvision_write"
_URL_HELP = "use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"


def parse_database_url(url: str | URL) -> URL:
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
        return parse_database_url(settings.database_url)
    parsed = urlparse(settings.store_url)
    if parsed.scheme != "file":
        raise ConfigError(
            f"the store {settings.store_url} is on S3, where the annotations database cannot "
            "live: set TIEFVISION_DATABASE_URL (or --database) to a PostgreSQL URL such as "
            "postgresql+psycopg://USER@HOST/tiefvision, or to sqlite:///PATH on a local disk"
        )
    path = Path(unquote(parsed.path)) / DEFAULT_SQLITE_NAME
    return URL.create("sqlite", database=str(path))


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
    immediate = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: URL) -> Engine:
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


def upgrade_schema(writer: Engine) -> None:
    """Bring the schema to head on ``writer`` (an engine with :data:`WRITE_OPTION`), one
    opener at a time."""
    from alembic import command

    with writer.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        command.upgrade(alembic_config(connection), "head")


def _is_connection_error(exc: DBAPIError) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, OperationalError | InterfaceError)


@contextmanager
def database_errors(url: URL, doing: str) -> Iterator[None]:
    """Failures of the database at ``url`` become one line naming it, never its password:
    unreachable (:class:`StorageUnreachable`), or a schema newer than this code knows
    (:class:`ConfigError`). ``doing``: what failed, as in "cannot *read* the database"."""
    from alembic.util import CommandError

    shown = url.render_as_string(hide_password=True)
    try:
        yield
    except DBAPIError as exc:
        if not exc.connection_invalidated and not _is_connection_error(exc):
            raise
        detail = str(exc.orig or exc).strip().splitlines()[0]
        if url.password:
            detail = detail.replace(str(url.password), "***")
        raise StorageUnreachable(
            f"cannot {doing} the annotations database {shown} ({detail}): "
            "check TIEFVISION_DATABASE_URL and that the database server is running"
        ) from None
    except CommandError as exc:
        if "Can't locate revision" not in str(exc):
            raise
        raise ConfigError(
            f"the annotations database {shown} has a schema this version of "
            f"TiefVision does not know ({exc}): it was written by a newer version; "
            "upgrade TiefVision"
        ) from None
