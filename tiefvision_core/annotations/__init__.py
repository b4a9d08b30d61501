"""Boxes and triplets people annotate: the database (models, engine, migrations), its store API
and the import/export file formats.

Public names are re-exported here and imported on first use (PEP 562): importing
one stage's package must not load the heavy dependencies of its other modules
(a search by id never imports torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tiefvision_core._lazy import lazy_exports

if TYPE_CHECKING:
    from tiefvision_core.annotations.files import (  # noqa: F401
        BOX_COLUMNS,
        TRIPLET_COLUMNS,
        Box,
        BoxInput,
        CatalogImage,
        CatalogIndex,
        ParsedFile,
        Refusal,
        TripletInput,
        box_problem,
        read_box_file,
        read_triplet_file,
    )
    from tiefvision_core.annotations.store import (  # noqa: F401
        DEFAULT_SQLITE_NAME,
        SNAPSHOT_PREFIX,
        AnnotationStore,
        Base,
        BoxRecord,
        BoxRow,
        ImportReport,
        Snapshot,
        TripletRow,
        Unheld,
        alembic_config,
        database_url_for,
        existing_annotations,
        head_revision,
        open_annotations,
        read_snapshot,
    )

#: Public name → the module of this package that defines it.
_EXPORTS = {
    "AnnotationStore": "store",
    "BOX_COLUMNS": "files",
    "Base": "store",
    "Box": "files",
    "BoxInput": "files",
    "BoxRecord": "store",
    "BoxRow": "store",
    "CatalogImage": "files",
    "CatalogIndex": "files",
    "DEFAULT_SQLITE_NAME": "store",
    "ImportReport": "store",
    "ParsedFile": "files",
    "Refusal": "files",
    "SNAPSHOT_PREFIX": "store",
    "Snapshot": "store",
    "TRIPLET_COLUMNS": "files",
    "TripletInput": "files",
    "TripletRow": "store",
    "Unheld": "store",
    "alembic_config": "store",
    "box_problem": "files",
    "database_url_for": "store",
    "existing_annotations": "store",
    "head_revision": "store",
    "open_annotations": "store",
    "read_box_file": "files",
    "read_snapshot": "store",
    "read_triplet_file": "files",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
