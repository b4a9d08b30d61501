"""Alembic environment: runs on the connection :mod:`tiefvision_core.annotations.database` passes
in.

Why a passed-in connection: the caller holds the migration lock (an immediate SQLite
transaction, or a PostgreSQL advisory lock) on that very connection, so concurrent opens
migrate one after the other and every migration is committed with the caller's transaction.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from tiefvision_core.annotations.schema import Base

config = context.config
target = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():  # `--sql`: print the DDL for a DBA instead of running it
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
else:
    url = config.get_main_option("sqlalchemy.url")
    if url is None:  # the `alembic` command run with neither a URL nor a connection
        raise RuntimeError("alembic: set sqlalchemy.url, or pass a connection in attributes")
    engine = create_engine(url)
    with engine.begin() as connection:
        _run(connection)
    engine.dispose()
