"""The catalog: photos listed from a source, safely decoded, ingested (``ingest``) into
versioned manifests (``manifest``); synthetic catalogs for demos and tests.

Public names are re-exported here and imported on first use (PEP 562): importing
one stage's package must not load the heavy dependencies of its other modules
(a search by id never imports torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tiefvision_core._lazy import lazy_exports

if TYPE_CHECKING:
    from tiefvision_core.catalog.boxes import (  # noqa: F401
        latest_boxes,
        located_boxes,
        read_boxes,
    )
    from tiefvision_core.catalog.imaging import (  # noqa: F401
        DEFAULT_MAX_PIXELS,
        FILE_REASONS,
        REJECT_REASONS,
        ImageInfo,
        decode_image,
        inspect_image,
    )
    from tiefvision_core.catalog.ingest import (  # noqa: F401
        IngestChunk,
        IngestPlan,
        IngestSummary,
        assemble_manifest,
        clear_staging,
        finish_ingest,
        ingest_catalog,
        inspect_chunk,
        load_metadata,
        plan_ingest,
        read_staged,
        stage_chunk,
        summarise,
    )
    from tiefvision_core.catalog.live import LiveCatalog, read_live_catalog  # noqa: F401
    from tiefvision_core.catalog.manifest import (  # noqa: F401
        CHANGE_KINDS,
        MANIFEST_COLUMNS,
        ManifestVersion,
        image_id_for,
        publish_manifest,
        read_manifest,
        read_rejects,
        usable_rows,
    )
    from tiefvision_core.catalog.sources import (  # noqa: F401
        SKIP_REASONS,
        Refused,
        SourceListing,
        list_source,
    )
    from tiefvision_core.catalog.synthetic import (  # noqa: F401
        SyntheticImage,
        generate_catalog,
        render_view,
    )
    from tiefvision_core.catalog.synthetic_garments import ProductSpec, make_products  # noqa: F401

#: Public name → the module of this package that defines it.
_EXPORTS = {
    "latest_boxes": "boxes",
    "located_boxes": "boxes",
    "read_boxes": "boxes",
    "CHANGE_KINDS": "manifest",
    "DEFAULT_MAX_PIXELS": "imaging",
    "FILE_REASONS": "imaging",
    "ImageInfo": "imaging",
    "IngestChunk": "ingest",
    "IngestPlan": "ingest",
    "IngestSummary": "ingest",
    "LiveCatalog": "live",
    "MANIFEST_COLUMNS": "manifest",
    "ManifestVersion": "manifest",
    "ProductSpec": "synthetic_garments",
    "REJECT_REASONS": "imaging",
    "Refused": "sources",
    "SKIP_REASONS": "sources",
    "SourceListing": "sources",
    "SyntheticImage": "synthetic",
    "assemble_manifest": "ingest",
    "clear_staging": "ingest",
    "decode_image": "imaging",
    "finish_ingest": "ingest",
    "generate_catalog": "synthetic",
    "image_id_for": "manifest",
    "ingest_catalog": "ingest",
    "inspect_chunk": "ingest",
    "inspect_image": "imaging",
    "list_source": "sources",
    "load_metadata": "ingest",
    "make_products": "synthetic_garments",
    "plan_ingest": "ingest",
    "publish_manifest": "manifest",
    "read_live_catalog": "live",
    "read_manifest": "manifest",
    "read_rejects": "manifest",
    "read_staged": "ingest",
    "render_view": "synthetic",
    "stage_chunk": "ingest",
    "summarise": "ingest",
    "usable_rows": "manifest",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
