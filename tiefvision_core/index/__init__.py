"""Search: index vectors, versions on storage and their CURRENT pointer, incremental updates,
search by id and by photo (in separate modules: a search by id never imports torch), reports.

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
    from tiefvision_core.index.kinds import (  # noqa: F401
        INDEX_KIND_CHOICES,
        INDEX_KINDS,
        IndexKind,
        IndexKindChoice,
        check_index_kind,
    )
    from tiefvision_core.index.photo_search import (  # noqa: F401
        QUERY_SCALES,
        query_box,
        query_scales,
        search_by_image,
    )
    from tiefvision_core.index.pointer import (  # noqa: F401
        INPUTS_READ_AT,
        RegressionRefused,
        StaleIndexInputs,
        inputs_read_at,
        switch_current,
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
    from tiefvision_core.index.vectors import (  # noqa: F401
        IndexConfig,
        VectorIndex,
        build_index,
        fit_projection,
        update_index,
    )
    from tiefvision_core.index.versions import (  # noqa: F401
        SPACES,
        IndexVersion,
        OpenedIndex,
        SelfCheckFailed,
        Space,
        VersionInfo,
        VersionRefused,
        check_space,
        list_versions,
        open_index,
        open_live_index,
        publish_index,
        remove_version,
        sweep_staging,
        use_version,
        version_time,
        versions,
    )

#: Public name → the module of this package that defines it.
_EXPORTS = {
    "Decision": "updates",
    "INDEX_KINDS": "kinds",
    "INDEX_KIND_CHOICES": "kinds",
    "INPUTS_READ_AT": "pointer",
    "GateComparison": "gate",
    "GateDecision": "gate",
    "GatePolicy": "gate",
    "IndexConfig": "vectors",
    "IndexDelta": "updates",
    "IndexKind": "kinds",
    "IndexKindChoice": "kinds",
    "IndexUpdate": "updates",
    "IndexVersion": "versions",
    "LiveIndex": "updates",
    "OpenedIndex": "versions",
    "QUERY_SCALES": "photo_search",
    "RegressionRefused": "pointer",
    "RowDiff": "updates",
    "SPACES": "versions",
    "SearchHit": "search",
    "SearchResult": "search",
    "SelfCheckFailed": "versions",
    "Space": "versions",
    "StaleIndexInputs": "pointer",
    "UpdatePolicy": "updates",
    "VectorIndex": "vectors",
    "VersionInfo": "versions",
    "VersionRefused": "versions",
    "build_index": "vectors",
    "catalog_rows": "spaces",
    "check_index_kind": "kinds",
    "check_space": "versions",
    "compare_spaces": "report",
    "compare_with_live": "gate",
    "decide_update": "updates",
    "diff_rows": "updates",
    "fit_projection": "vectors",
    "gate_markdown": "gate",
    "inputs_read_at": "pointer",
    "list_versions": "versions",
    "open_index": "versions",
    "open_live_index": "versions",
    "publish_index": "versions",
    "query_box": "photo_search",
    "query_scales": "photo_search",
    "rebuild_space": "spaces",
    "regression_gate": "gate",
    "remove_version": "versions",
    "search_by_id": "search",
    "search_by_image": "photo_search",
    "search_report_html": "report",
    "space_source": "spaces",
    "space_transform": "spaces",
    "space_vectors": "spaces",
    "sweep_staging": "versions",
    "switch_current": "pointer",
    "update_index": "vectors",
    "update_space": "updates",
    "use_version": "versions",
    "version_time": "versions",
    "versions": "versions",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
