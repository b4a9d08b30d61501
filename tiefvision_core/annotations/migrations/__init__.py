"""Alembic migrations of the annotations database, run by
:mod:`tiefvision_core.annotations.database` whenever a database is opened (nobody runs
``alembic`` by hand).

A new revision, after changing the ORM classes in ``schema.py``::

    from alembic import command
    from tiefvision_core.annotations.database import alembic_config
    from tiefvision_core.annotations.repository import AnnotationDatabase

    with AnnotationDatabase("sqlite:////tmp/rev.sqlite") as db, db.engine.connect() as c:
        command.revision(alembic_config(c), "what changed", autogenerate=True, rev_id="0002")

then read the generated file in ``versions/`` and make it work on SQLite and PostgreSQL.
"""
