"""Boxes and triplets people annotate: the database's tables (``schema``), where it is and how
it is opened and migrated (``database``, Alembic ``migrations/``), its API (``store``),
snapshots on storage (``snapshots``), annotations following the catalog (``following``) and
the import/export file formats (``files``).

Import from the module that defines a name: the package re-exports nothing, so importing
one module never loads another's heavy dependencies (a search by id never imports torch).
"""
