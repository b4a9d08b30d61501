"""Boxes and triplets people annotate: the database's tables (``schema``), where it is and how
it is opened and migrated (``database``, Alembic ``migrations/``), its API (``store``),
snapshots on storage (``snapshots``), annotations following the catalog (``following``) and
the import/export file formats (``files``).

Public names are re-exported here and imported on first use (PEP 562): importing
one stage's package must not load the heavy dependencies of its other modules
(a search by id never imports torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tiefvision_core._lazy import lazy_exports

if TYPE_CHECKING:
    from tiefvision_core.annotations.database import (  # noqa: F401
        DEFAULT_SQLITE_NAME,
        alembic_config,
        database_url_for,
        head_revision,
    )
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
    from tiefvision_core.annotations.following import Unheld  # noqa: F401
    from tiefvision_core.annotations.schema import Base, BoxRow, TripletRow  # noqa: F401
    from tiefvision_core.annotations.snapshots import (  # noqa: F401
        SNAPSHOT_PREFIX,
        Snapshot,
        read_snapshot,
    )
    from tiefvision_core.annotations.store import (  # noqa: F401
        AnnotationStore,
        BoxRecord,
        ImportReport,
        existing_annotations,
        open_annotations,
    )

#: Public name → the module of this package that defines it.
_EXPORTS = {
    "AnnotationStore": "store",
    "BOX_COLUMNS": "files",
    "Base": "schema",
    "Box": "files",
    "BoxInput": "files",
    "BoxRecord": "store",
    "BoxRow": "schema",
    "CatalogImage": "files",
    "CatalogIndex": "files",
    "DEFAULT_SQLITE_NAME": "database",
    "ImportReport": "store",
    "ParsedFile": "files",
    "Refusal": "files",
    "SNAPSHOT_PREFIX": "snapshots",
    "Snapshot": "snapshots",
    "TRIPLET_COLUMNS": "files",
    "TripletInput": "files",
    "TripletRow": "schema",
    "Unheld": "following",
    "alembic_config": "database",
    "box_problem": "files",
    "database_url_for": "database",
    "existing_annotations": "store",
    "head_revision": "database",
    "open_annotations": "store",
    "read_box_file": "files",
    "read_snapshot": "snapshots",
    "read_triplet_file": "files",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
