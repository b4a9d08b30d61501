"""Similarity search, by image id and by photo: the one module the web service and the CLI
search through.

A search by id (neighbours of a catalog photo, from its stored vector) is defined here. A
search by photo (:func:`read_query_photo` decodes and locates an upload once,
:func:`search_by_photo` searches with it, :func:`search_by_image` does both) needs the
encoder and the locator, so torch: it is defined in :mod:`tiefvision_core.index.photo_search`
and importable from here, loaded on first use (PEP 562). Light on purpose: ``tiefvision
search --id`` must not import torch (~2 s cold).
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, SupportsInt

import numpy as np

from tiefvision_core.catalog.live import LiveCatalog
from tiefvision_core.errors import InputError
from tiefvision_core.vector_index.versions import OpenedIndex

if TYPE_CHECKING:
    from tiefvision_core.index.photo_search import (
        QUERY_SCALES,
        QueryPhoto,
        query_box,
        query_scales,
        read_query_photo,
        search_by_image,
        search_by_photo,
    )

__all__ = [
    "QUERY_SCALES",
    "QueryPhoto",
    "SearchHit",
    "SearchResult",
    "query_box",
    "query_row",
    "query_scales",
    "read_query_photo",
    "search_by_id",
    "search_by_image",
    "search_by_photo",
    "search_vector",
    "similarity",
]

#: The search by photo's names (defined with torch at hand) → the module of this package
#: that defines them: only an import of one of them pays for torch.
_ELSEWHERE = {
    "QUERY_SCALES": "photo_search",
    "QueryPhoto": "photo_search",
    "query_box": "photo_search",
    "query_scales": "photo_search",
    "read_query_photo": "photo_search",
    "search_by_image": "photo_search",
    "search_by_photo": "photo_search",
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
    drop: Collection[int] = frozenset(),
) -> list[SearchHit]:
    """The first ``k`` candidates that are neither missing (row -1), the query itself, a
    row of ``drop`` (photos the live catalog no longer lists) nor outside ``where``."""
    hits = []
    image_ids, boxes = opened.column("image_id"), opened.column("box")
    for score, row in zip(scores.tolist(), rows.tolist(), strict=True):
        if row < 0 or row in drop:
            continue
        if exclude is not None and image_ids[row] == exclude:
            continue
        if where and any(str(opened.column(c)[row]) != v for c, v in where.items()):
            continue
        hits.append(SearchHit(image_ids[row], similarity(score), _ints(boxes[row])))
        if len(hits) == k:
            break
    return hits


def similarity(score: float) -> float:
    """A hit's score as answered: clamped into [-1, 1] and rounded to 6 decimals. Why the
    clamp: the score is a cosine of unit vectors, but the index stores them as float16, so
    a photo's own (or a duplicate's) score comes out a hair above 1 (1.000026 seen), which
    a client checking the range rejects."""
    return round(min(1.0, max(-1.0, score)), 6)


def _ints(box: Iterable[SupportsInt]) -> list[int]:
    return [int(v) for v in box]


def _check_filter(opened: OpenedIndex, where: dict[str, str] | None) -> None:
    for column in where or {}:
        if column not in opened.ids.columns or column in ("box",):
            raise InputError(
                f"cannot filter on {column!r}: the index knows "
                f"{', '.join(c for c in opened.ids.columns if c != 'box')}"
            )


def search_vector(
    opened: OpenedIndex,
    query: np.ndarray,
    k: int,
    *,
    exclude: str | None = None,
    where: dict[str, str] | None = None,
    live: LiveCatalog | None = None,
) -> list[SearchHit]:
    """The ``k`` best hits for ``query`` (a vector of the index's space), never the photo
    ``exclude`` names, only rows matching ``where``; with ``live``, only photos that
    catalog lists with the bytes this index holds (see :mod:`tiefvision_core.catalog.live`)."""
    _check_filter(opened, where)
    drop = frozenset() if live is None else opened.rows_outside(live)
    wanted = k + (exclude is not None)
    if where:
        wanted = max(wanted * 10, opened.index.config.rerank)
    # Each dropped row can take one candidate's place at most: asking for that many more
    # still brings k hits back whenever the index holds k live ones.
    wanted += len(drop)
    # ANN indexes re-rank their ``rerank`` best compact-space candidates (at least
    # ``wanted``) exactly: the recall measured by bench/search.py, not that of the top k+1.
    scores, rows = opened.index.search(query[None, :], wanted)
    return _hits(opened, scores[0], rows[0], k, exclude, where, drop)


def query_row(opened: OpenedIndex, image_id: str, live: LiveCatalog | None = None) -> int:
    """The index row a search by ``image_id`` starts from. An InputError when the index
    does not hold the id, and (given ``live``) when the live catalog no longer lists the
    photo, or lists other bytes for it: its stored vector is of a photo that is gone."""
    row = opened.row_of(image_id)
    if live is None or row not in opened.rows_outside(live):
        return row
    since = f"since the {opened.space} index {opened.version} was built"
    if not live.holds(image_id):
        raise InputError(
            f"image id {image_id!r} is not in the catalog any more (removed or rejected "
            f"{since}): "
            "pick another id (tiefvision ingest lists them)"
        )
    raise InputError(
        f"photo {image_id!r} changed {since}: its new bytes are searchable once "
        "`tiefvision reindex` publishes a new index version"
    )


def search_by_id(
    opened: OpenedIndex,
    image_id: str,
    *,
    k: int = 10,
    include_self: bool = False,
    where: dict[str, str] | None = None,
    live: LiveCatalog | None = None,
) -> SearchResult:
    """Neighbours of a catalog photo, from its stored vector (no encoding needed). ``live``:
    the live catalog (:func:`~tiefvision_core.catalog.live.read_live_catalog`), whose
    removed and re-shot photos are neither asked about nor answered, whichever version of
    the index is live; None searches the index as it is (evaluation, tests)."""
    row = query_row(opened, image_id, live)
    query = np.asarray(opened.index.vectors[row], np.float32)
    exclude = None if include_self else image_id
    hits = search_vector(opened, query, k, exclude=exclude, where=where, live=live)
    return SearchResult(opened.space, opened.version, hits, _ints(opened.column("box")[row]))


def __getattr__(name: str) -> Any:
    module = _ELSEWHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"tiefvision_core.index.{module}"), name)
