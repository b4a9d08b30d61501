"""Similarity search by image id: neighbours of a catalog photo from its stored vector.

Light on purpose: ``tiefvision search --id`` must not import torch (~2 s cold), so building
a space's vectors (:mod:`tiefvision_core.index.spaces`) and searching by an uploaded photo
(:mod:`tiefvision_core.index.photo_search`), which need the encoder, live in their own
modules. Their names stay importable from here, loaded on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, SupportsInt

import numpy as np

from tiefvision_core.errors import InputError
from tiefvision_core.index.versions import OpenedIndex

__all__ = ["SearchHit", "SearchResult", "search_by_id"]

#: Names that lived here before the split → the module of this package that has them now:
#: ``from tiefvision_core.index.search import rebuild_space`` (bench scripts, older callers)
#: keeps working, and only such an import pays for torch.
_MOVED = {
    "QUERY_SCALES": "photo_search",
    "catalog_rows": "spaces",
    "id_frame": "spaces",
    "query_box": "photo_search",
    "query_scales": "photo_search",
    "rebuild_space": "spaces",
    "search_by_image": "photo_search",
    "space_source": "spaces",
    "space_transform": "spaces",
    "space_vectors": "spaces",
}


@dataclass(frozen=True)
class SearchHit:
    image_id: str
    score: float
    box: list[int]


@dataclass(frozen=True)
class SearchResult:
    space: str
    index_version: str
    results: list[SearchHit]
    query_box: list[int] | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:  # JSON: the API and `search --json` answer it
        data: dict[str, Any] = {
            "index_version": self.index_version,
            "space": self.space,
            "results": [asdict(hit) for hit in self.results],
        }
        if self.query_box is not None:
            data["query_box"] = self.query_box
        return data


def _hits(
    opened: OpenedIndex,
    scores: np.ndarray,
    rows: np.ndarray,
    k: int,
    exclude: str | None,
    where: dict[str, str] | None,
) -> list[SearchHit]:
    hits = []
    image_ids, boxes = opened.column("image_id"), opened.column("box")
    for score, row in zip(scores.tolist(), rows.tolist(), strict=True):
        if row < 0:
            continue
        if exclude is not None and image_ids[row] == exclude:
            continue
        if where and any(str(opened.column(c)[row]) != v for c, v in where.items()):
            continue
        hits.append(SearchHit(image_ids[row], round(score, 6), _ints(boxes[row])))
        if len(hits) == k:
            break
    return hits


def _ints(box: Iterable[SupportsInt]) -> list[int]:
    return [int(v) for v in box]


def _check_filter(opened: OpenedIndex, where: dict[str, str] | None) -> None:
    for column in where or {}:
        if column not in opened.ids.columns or column in ("box",):
            raise InputError(
                f"cannot filter on {column!r}: the index knows "
                f"{', '.join(c for c in opened.ids.columns if c != 'box')}"
            )


def _search(opened: OpenedIndex, query: np.ndarray, k: int, exclude, where) -> list[SearchHit]:
    _check_filter(opened, where)
    wanted = k + (exclude is not None)
    if where:
        wanted = max(wanted * 10, opened.index.config.rerank)
    # ANN indexes re-rank their ``rerank`` best compact-space candidates (at least
    # ``wanted``) exactly: the recall measured by bench/search.py, not that of the top k+1.
    scores, rows = opened.index.search(query[None, :], wanted)
    return _hits(opened, scores[0], rows[0], k, exclude, where)


def search_by_id(
    opened: OpenedIndex,
    image_id: str,
    *,
    k: int = 10,
    include_self: bool = False,
    where: dict[str, str] | None = None,
) -> SearchResult:
    """Neighbours of a catalog photo, from its stored vector (no encoding needed)."""
    row = opened.row_of(image_id)
    query = np.asarray(opened.index.vectors[row], np.float32)
    hits = _search(opened, query, k, None if include_self else image_id, where)
    return SearchResult(opened.space, opened.version, hits, _ints(opened.column("box")[row]))


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"tiefvision_core.index.{module}"), name)
