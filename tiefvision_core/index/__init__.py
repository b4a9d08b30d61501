"""The index stage: a space's vectors built and published behind the regression gate,
incremental updates, search by id and by photo (in separate modules: a search by id never
imports torch), reports. The index files, their versions and the ``CURRENT`` pointer are
one level down, in :mod:`tiefvision_core.vector_index`.

Public names are re-exported here and imported on first use (PEP 562): importing
one stage's package must not load the heavy dependencies of its other modules
(a search by id never imports torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tiefvision_core._lazy import lazy_exports

if TYPE_CHECKING:
    from tiefvision_core.index.gate import (  # noqa: F401
        GateComparison,
        GateDecision,
        GatePolicy,
        compare_with_live,
        gate_markdown,
        regression_gate,
    )
    from tiefvision_core.index.photo_search import (  # noqa: F401
        QUERY_SCALES,
        query_box,
        query_scales,
        search_by_image,
    )
    from tiefvision_core.index.report import (  # noqa: F401
        compare_spaces,
        search_report_html,
    )
    from tiefvision_core.index.search import (  # noqa: F401
        SearchHit,
        SearchResult,
        search_by_id,
    )
    from tiefvision_core.index.spaces import (  # noqa: F401
        catalog_rows,
        rebuild_space,
        space_source,
        space_transform,
        space_vectors,
    )
    from tiefvision_core.index.updates import (  # noqa: F401
        Decision,
        IndexDelta,
        IndexUpdate,
        LiveIndex,
        RowDiff,
        UpdatePolicy,
        decide_update,
        diff_rows,
        update_space,
    )

#: Public name → the module of this package that defines it.
_EXPORTS = {
    "Decision": "updates",
    "GateComparison": "gate",
    "GateDecision": "gate",
    "GatePolicy": "gate",
    "IndexDelta": "updates",
    "IndexUpdate": "updates",
    "LiveIndex": "updates",
    "QUERY_SCALES": "photo_search",
    "RowDiff": "updates",
    "SearchHit": "search",
    "SearchResult": "search",
    "UpdatePolicy": "updates",
    "catalog_rows": "spaces",
    "compare_spaces": "report",
    "compare_with_live": "gate",
    "decide_update": "updates",
    "diff_rows": "updates",
    "gate_markdown": "gate",
    "query_box": "photo_search",
    "query_scales": "photo_search",
    "rebuild_space": "spaces",
    "regression_gate": "gate",
    "search_by_id": "search",
    "search_by_image": "photo_search",
    "search_report_html": "report",
    "space_source": "spaces",
    "space_transform": "spaces",
    "space_vectors": "spaces",
    "update_space": "updates",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
