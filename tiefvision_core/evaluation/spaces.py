"""Scoring an index version's retrieval on the user's own catalog: who asks and who is
relevant (:func:`space_queries`, "same ``product_id``", the query photo itself left out),
the search a user would get (:func:`search_queries`), the scores written next to the
version (:func:`score_version`), and the paired difference of two versions with its 95 %
interval (:func:`paired_difference`).

What both the ``evaluate`` stage (:mod:`tiefvision_core.evaluation.evaluate`) and the
index's regression gate (:mod:`tiefvision_core.index.gate`) score a version with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tiefvision_core.similarity.retrieval import (
    PerQuery,
    RetrievalScores,
    per_query,
    product_interval,
    retrieval_scores,
)
from tiefvision_core.storage.layout import SIMILARITY_PREFIX, index_evaluation_key
from tiefvision_core.storage.stores import Store
from tiefvision_core.vector_index.versions import OpenedIndex

__all__ = [
    "SpaceQueries",
    "VersionScores",
    "held_out_gain",
    "live_neighbours",
    "paired_difference",
    "sample_mask",
    "score_version",
    "search_queries",
    "space_queries",
    "write_scores",
]

#: Ranked results kept per query: mAP@10 needs ten.
_DEPTH = 10
#: Queries searched at once: bounds the (queries × results) arrays on a large catalog.
_BATCH = 1024


def live_neighbours(
    opened: OpenedIndex, rows: Sequence[int] | np.ndarray, k: int = _DEPTH
) -> np.ndarray:
    """(len(rows), k) index rows the live search returns for each of ``rows``'s stored
    vectors, the query's own row left out (-1 where it found fewer): the ranking a user
    gets from "more like this photo"."""
    vectors = opened.index.vectors
    out = np.full((len(rows), k), -1, np.int64)
    for start in range(0, len(rows), _BATCH):
        chunk = np.asarray(rows[start : start + _BATCH], np.int64)
        _, found = opened.index.search(np.asarray(vectors[chunk], np.float32), k + 1)
        for n, (query, hits) in enumerate(zip(chunk, found, strict=True)):
            kept = hits[(hits != query) & (hits >= 0)][:k]
            out[start + n, : len(kept)] = kept
    return out


def _held_out_products(store: Store, opened: OpenedIndex) -> set[str] | str:
    """The products the supervised space's similarity model held out, or why unknown."""
    model = opened.metadata.get("source", {}).get("model_version")
    key = f"{SIMILARITY_PREFIX}{model}/metadata.json"
    if model is None:
        return "the supervised index does not say which similarity model it was built with"
    if not store.exists(key):
        return f"similarity model {model}, which the supervised index was built with, is gone"
    return {str(p) for p in json.loads(store.get_bytes(key)).get("held_out_products", [])}


@dataclass(frozen=True)
class SpaceQueries:
    """One index version's ground truth: each row's label (its ``product_id``, or a label
    no other row has) and the rows that ask (held-out products with a photo to find)."""

    labels: np.ndarray
    rows: np.ndarray
    scope: str

    def photos(self, opened: OpenedIndex) -> list[tuple[str, str]]:
        """(image_id, sha256) of each asking row: the same photo in another version."""
        ids, shas = opened.column("image_id"), opened.column("sha256")
        return [(ids[row], shas[row]) for row in self.rows]

    def subset(self, keep: np.ndarray) -> SpaceQueries:
        """Only the asking rows ``keep`` (a mask over ``rows``) ask; the gallery and the
        labels stay whole, so each still searches every photo."""
        return SpaceQueries(self.labels, self.rows[keep], self.scope)


def _photo_keys(photos: Sequence[tuple[str, str]]) -> np.ndarray:
    """A pseudo-random 64-bit key per (image_id, sha256), the same in every process and
    every version: a sample drawn by it is the same photos wherever they are asked."""
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(f"{i}\0{s}".encode(), digest_size=8).digest(), "big")
            for i, s in photos
        ],
        np.uint64,
    )


def sample_mask(photos: Sequence[tuple[str, str]], cap: int | None) -> np.ndarray:
    """Which of ``photos`` ask: all of them up to ``cap`` (None: no cap), else the ``cap``
    with the smallest stable key (:func:`_photo_keys`). Why by key, not at random: two
    versions sampled from the same photos ask the same ones, and so does the next run, so
    a difference between two scores is the search's, not the draw's."""
    keep = np.ones(len(photos), bool)
    if cap is None or len(photos) <= cap:
        return keep
    keep[:] = False
    keep[np.argsort(_photo_keys(photos), kind="stable")[:cap]] = True
    return keep


def space_queries(store: Store, opened: OpenedIndex) -> SpaceQueries | str:
    """Who asks and who is relevant in ``opened`` — or why it cannot be scored. Relevant:
    the query's ``product_id``; photos without one are in the gallery but never relevant
    nor asked; the supervised space asks only about the products its model held out."""
    space = opened.space
    if "product_id" not in opened.ids or opened.ids["product_id"].isna().all():
        return (
            f"{space} retrieval skipped: the catalog has no product ids (ingest with "
            "`--metadata FILE` holding a product_id column)"
        )
    products = opened.ids["product_id"]
    labels = np.array(
        [
            f"unlabelled:{i}" if pd.isna(p) else str(p)
            for i, p in zip(opened.ids["image_id"], products, strict=True)
        ]
    )
    asking = products.notna().to_numpy()
    scope = "all products"
    if space == "supervised":
        held = _held_out_products(store, opened)
        if isinstance(held, str):
            return f"supervised retrieval skipped: {held}"
        asking = asking & np.isin(labels, sorted(held))
        scope = "products the similarity model held out"
    # A product with one photo has nothing to find: it does not ask.
    _, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    asking = asking & (sizes[inverse.reshape(-1)] > 1)
    rows = np.flatnonzero(asking)
    if len(opened.ids) < 2 or not products.notna().any() or len(rows) == 0:
        return f"{space} retrieval skipped: no product has two photos ({scope})"
    return SpaceQueries(labels, rows, scope)


@dataclass(frozen=True)
class VersionScores:
    """One version searched: the ranking of each asking photo (so a comparison on a subset
    of its queries searches nothing again) and what ``evaluation.json`` holds of it."""

    version: str
    gallery: int  # photos the version answers from
    queries: SpaceQueries
    neighbours: np.ndarray  # (len(queries.rows), 10) index rows, -1 where fewer
    #: How many photos could have asked; above ``len(queries.rows)`` the rows are a sample.
    asking: int | None = None

    def on(self, keep: np.ndarray) -> RetrievalScores:
        """The scores of the asking rows ``keep`` (a mask over ``queries.rows``) alone."""
        return retrieval_scores(
            self.neighbours[keep], self.queries.labels, queries=self.queries.rows[keep]
        )

    def figures(self, keep: np.ndarray) -> PerQuery:
        """Each asking row of ``keep``'s own figures (what an interval resamples)."""
        return per_query(
            self.neighbours[keep], self.queries.labels, queries=self.queries.rows[keep]
        )

    def summary(self, keep: np.ndarray | None = None, asking: int | None = None) -> dict:
        """The ``evaluation.json`` record of the asking rows ``keep`` (default: all);
        ``asking`` above the rows scored makes them a sample: ``sampled_from`` says of how
        many photos, so a later reader does not take a sample's score for the whole's.
        ``map_at_10_interval``: its 95 % interval, bootstrapped over products."""
        keep = np.ones(len(self.queries.rows), bool) if keep is None else keep
        rows = self.queries.rows[keep]
        figures = self.figures(keep)
        result: dict[str, object] = {
            "version": self.version,
            **self.on(keep).as_dict(),
            "products": len(set(self.queries.labels[rows])),
            "scope": self.queries.scope,
            "gallery": self.gallery,
        }
        if len(figures.labels):
            interval = product_interval(figures.ap_at_10, figures.labels)
            result["map_at_10_interval"] = list(interval)
        if asking is not None and asking > len(rows):
            result["sampled_from"] = asking
        return result

    @property
    def result(self) -> dict[str, object]:
        """The record of every row searched (what :func:`score_version` writes)."""
        return self.summary(asking=self.asking)


def search_queries(
    opened: OpenedIndex, queries: SpaceQueries, asking: int | None = None
) -> VersionScores:
    """Search each asking row of ``queries`` in ``opened`` as a user would (nothing is
    written): the one search a score or a comparison needs."""
    neighbours = live_neighbours(opened, queries.rows)
    return VersionScores(opened.version, len(opened.ids), queries, neighbours, asking)


def write_scores(store: Store, opened: OpenedIndex, result: dict[str, object]) -> None:
    """``result`` as ``<index version>/evaluation.json``: what ``evaluate --history`` reads."""
    key = index_evaluation_key(opened.space, opened.version)
    store.put_bytes(key, json.dumps(result, indent=1).encode())


def score_version(
    store: Store, opened: OpenedIndex, *, max_queries: int | None = None
) -> VersionScores | str:
    """P@1, P@5, mAP@10 of an index version (live or not) as search answers, written to
    ``<index version>/evaluation.json``; or why it cannot be scored. ``max_queries``: ask
    at most that many photos, a stable sample (:func:`sample_mask`); None: every one."""
    queries = space_queries(store, opened)
    if isinstance(queries, str):
        return queries
    asked = queries.subset(sample_mask(queries.photos(opened), max_queries))
    scored = search_queries(opened, asked, len(queries.rows))
    write_scores(store, opened, scored.result)
    return scored


def _asked_figures(
    opened: OpenedIndex, scored: VersionScores
) -> tuple[PerQuery, dict[tuple[str, str], int]]:
    """A version's per-query figures and where each asking photo's are among them."""
    figures = scored.figures(np.ones(len(scored.queries.rows), bool))
    photos = scored.queries.photos(opened)
    return figures, {photos[i]: n for n, i in enumerate(figures.asked)}


def paired_difference(
    first: tuple[OpenedIndex, VersionScores], second: tuple[OpenedIndex, VersionScores]
) -> dict[str, object] | None:
    """mAP@10 of ``first`` minus ``second`` on the photos that ask in both (each version
    answering from its own gallery), with a 95 % interval bootstrapped over products —
    paired, so the photos' own difficulty cancels. None when no photo asks in both.

    Why an interval: on a catalog of a few products a difference of 0.05 can be noise; the
    interval says whether it is (it includes 0) or not. ``evaluate`` reports it for the
    gain of training, the regression gate decides with it."""
    spaces = [_asked_figures(opened, scored) for opened, scored in (first, second)]
    common = sorted(set(spaces[0][1]) & set(spaces[1][1]))
    if not common:
        return None
    ap = [figures.ap_at_10[[where[p] for p in common]] for figures, where in spaces]
    products = spaces[0][0].labels[[spaces[0][1][p] for p in common]]
    difference = ap[0] - ap[1]
    return {
        "queries": len(common),
        "products": len(set(products.tolist())),
        "first_map_at_10": round(float(ap[0].mean()), 4),
        "second_map_at_10": round(float(ap[1].mean()), 4),
        "difference": round(float(difference.mean()), 4),
        "interval": list(product_interval(difference, products)),
    }


def held_out_gain(
    trained: tuple[OpenedIndex, VersionScores], untrained: tuple[OpenedIndex, VersionScores]
) -> dict[str, object] | None:
    """What training bought on the products it never saw: :func:`paired_difference` of the
    supervised space and the unsupervised one on the supervised model's held-out photos."""
    paired = paired_difference(trained, untrained)
    if paired is None:
        return None
    return {
        "queries": paired["queries"],
        "products": paired["products"],
        "supervised_map_at_10": paired["first_map_at_10"],
        "unsupervised_map_at_10": paired["second_map_at_10"],
        "gain": paired["difference"],
        "gain_interval": paired["interval"],
    }
