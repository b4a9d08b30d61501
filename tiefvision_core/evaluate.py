"""How good is what is live, on the user's own catalog: the ``evaluate`` stage.

Two questions, each answered only on data the live model did not learn from — a score on
training photos says how well it memorised, not how well it will do on the next photo:

* **locator** — the live locator's located boxes against the annotated boxes, on the
  annotated photos outside its crops dataset's train split (its test photos, and photos
  annotated since that it never saw), side by side with the whole-photo and median-box
  baselines of :mod:`tiefvision_core.locator.evaluation`;
* **retrieval** — P@1, P@5 and mAP@10 of each live index space, with "same ``product_id``"
  as relevant and the query photo itself left out: the unsupervised space on every
  product, the supervised space only on the products its similarity model held out.

Each result is written as ``evaluation.json`` into the folder of the version it scores
(keys in :mod:`tiefvision_core.storage.layout`), so a later run, or a later version,
compares with it. What cannot be scored (no locator, no index, no product ids) is skipped
with a note saying why and what to do; it is not an error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from tiefvision_core.catalog.boxes import read_boxes
from tiefvision_core.catalog.ingest import read_manifest
from tiefvision_core.errors import StorageNotFound
from tiefvision_core.locator.evaluation import evaluate_boxes
from tiefvision_core.similarity.retrieval import (
    PerQuery,
    RetrievalScores,
    per_query,
    product_interval,
    retrieval_scores,
)
from tiefvision_core.storage.layout import (
    LOCATOR_CURRENT,
    LOCATOR_PREFIX,
    SIMILARITY_PREFIX,
    crops_work_key,
    index_evaluation_key,
    locator_evaluation_key,
    locator_prefix,
)
from tiefvision_core.storage.stores import Store
from tiefvision_core.vector_index.versions import (
    SPACES,
    OpenedIndex,
    list_versions,
    open_live_index,
    version_time,
)

__all__ = [
    "EvaluationReport",
    "SpaceQueries",
    "VersionScores",
    "evaluate_catalog",
    "evaluate_locator",
    "evaluate_space",
    "evaluation_history",
    "live_neighbours",
    "sample_mask",
    "score_version",
    "search_queries",
    "space_queries",
    "write_scores",
]

_COORDS = ["left", "top", "right", "bottom"]
#: Ranked results kept per query: mAP@10 needs ten.
_DEPTH = 10
#: Queries searched at once: bounds the (queries × results) arrays on a large catalog.
_BATCH = 1024


@dataclass(frozen=True)
class EvaluationReport:
    """What ``tiefvision evaluate`` found: small, plain values (a flow result)."""

    locator: dict[str, object] | None = None
    retrieval: dict[str, dict[str, object]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    written: tuple[str, ...] = ()
    #: The supervised space's gain over the unsupervised one on its held-out products
    #: (:func:`held_out_gain`), when both are live.
    gain: dict[str, object] | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def rows(self) -> list[dict[str, object]]:
        """One row per measured thing, for a table (CLI, Prefect artifact)."""
        rows: list[dict[str, object]] = []
        if self.locator is not None:
            for name in ("locator", "whole_image", "centre_median"):
                scores = self.locator[name]
                assert isinstance(scores, dict)
                rows.append(
                    {
                        "what": f"boxes: {name.replace('_', ' ')}",
                        "on": f"{self.locator['images']} held-out photos",
                        "score": (
                            f"IoU {scores['mean_iou']:.3f} · ≥0.5 {scores['share_iou_05']:.0%}"
                            f" · ≥0.7 {scores['share_iou_07']:.0%}"
                        ),
                    }
                )
            rows[0]["score"] = f"{rows[0]['score']} · {self.locator['fallbacks']} fallbacks"
            low = self.locator.get("low_confidence")  # locators since the low-confidence rule
            if low:
                rows[0]["score"] = f"{rows[0]['score']} · {low} low-confidence"
        for space, scores in self.retrieval.items():
            interval = scores.get("map_at_10_interval")  # versions scored since it exists
            rows.append(
                {
                    "what": f"retrieval: {space}",
                    "on": f"{scores['queries']} queries, {scores['products']} products",
                    "score": (
                        f"P@1 {scores['precision_at_1']:.3f} · P@5 {scores['precision_at_5']:.3f}"
                        f" · mAP@10 {scores['map_at_10']:.3f}"
                        + ("" if not isinstance(interval, list) else _interval(interval))
                    ),
                }
            )
        if self.gain is not None:
            gain = self.gain
            low, high = (float(b) for b in gain["gain_interval"])  # type: ignore[attr-defined]
            verdict = "a real gain" if low > 0 else "a real loss" if high < 0 else "within noise"
            rows.append(
                {
                    "what": "gain: supervised − unsupervised",
                    "on": f"{gain['queries']} held-out queries, {gain['products']} products",
                    "score": f"mAP@10 {gain['gain']:+.3f} [{low:+.3f}, {high:+.3f}]: {verdict}",
                }
            )
        return rows


def _interval(bounds: list[object]) -> str:
    low, high = (float(b) for b in bounds)  # type: ignore[arg-type]
    return f" [{low:.3f}, {high:.3f}]"


def _truth_of_work(work: pd.DataFrame) -> pd.DataFrame:
    """A crops plan's rows (image_id, sha256, box, width, height) as truth boxes."""
    boxes = np.array(work["box"].tolist(), np.float64).reshape(-1, 4)
    truth = work[["image_id", "sha256", "width", "height"]].copy()
    truth[_COORDS] = boxes
    return truth


def evaluate_locator(
    store: Store,
    annotated: pd.DataFrame | None = None,
    *,
    manifest: pa.Table | None = None,
) -> tuple[dict[str, object] | None, str | None]:
    """(scores, None) of the live locator on the annotated photos it did not train on, or
    (None, why not). Writes them to ``<locator version>/evaluation.json``.

    ``annotated``: the current boxes (image_id, sha256, width, height, left…bottom, as an
    annotation snapshot holds them); default: the boxes the locator's crops dataset was
    planned from. A photo whose bytes changed since it was annotated is left out (its box
    may no longer fit), as training leaves it out.
    """
    version = store.read_pointer(LOCATOR_CURRENT)
    if version is None:
        return None, "no locator yet: `tiefvision train-locator` trains one"
    metadata = json.loads(store.get_bytes(locator_prefix(version) + "metadata.json"))
    work = store.read_parquet(crops_work_key(str(metadata["crops_dataset"]))).to_pandas()
    trained_on = set(work.loc[work["split"] == "train", "image_id"])
    truth = _truth_of_work(work) if annotated is None else annotated
    held_out = truth[~truth["image_id"].isin(trained_on)]
    predicted = read_boxes(store, version, manifest=manifest)
    if "sha256" in held_out:
        predicted = predicted.merge(held_out[["image_id", "sha256"]], on=["image_id", "sha256"])
    scored = held_out[held_out["image_id"].isin(predicted["image_id"])]
    if scored.empty:
        return None, (
            f"locator {version}: none of {len(held_out)} held-out annotated photos has a "
            "located box: run `tiefvision locate` (or annotate photos it did not train on)"
        )
    evaluation = evaluate_boxes(predicted, scored, _truth_of_work(work[work["split"] == "train"]))
    result: dict[str, object] = {
        "version": version,
        **evaluation.as_dict(),
        "held_out_annotated": len(held_out),
        "never_seen": int((~held_out["image_id"].isin(set(work["image_id"]))).sum()),
        "trained_on": len(trained_on),
    }
    store.put_bytes(locator_evaluation_key(version), json.dumps(result, indent=1).encode())
    return result, None


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


def _score_live(store: Store, space: str) -> tuple[OpenedIndex, VersionScores] | str:
    opened = open_live_index(store, space)
    if opened is None:
        return f"no {space} index: `tiefvision rebuild-index --space {space}` builds it"
    scored = score_version(store, opened)
    return scored if isinstance(scored, str) else (opened, scored)


def evaluate_space(store: Store, space: str) -> tuple[dict[str, object] | None, str | None]:
    """(scores, None) of a live index space, or (None, why not); writes them to
    ``<index version>/evaluation.json`` (see :func:`score_version`)."""
    scored = _score_live(store, space)
    if isinstance(scored, str):
        return None, scored
    return scored[1].result, None


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


def evaluate_catalog(
    store: Store,
    annotated: pd.DataFrame | None = None,
    *,
    spaces: Iterable[str] = SPACES,
) -> EvaluationReport:
    """Locator and every live space scored, each written next to its version."""
    manifest = read_manifest(store)
    notes: list[str] = []
    written: list[str] = []
    locator, why = evaluate_locator(store, annotated, manifest=manifest)
    if locator is None:
        notes.append(str(why))
    else:
        written.append(store.uri(locator_evaluation_key(str(locator["version"]))))
    retrieval: dict[str, dict[str, object]] = {}
    scored: dict[str, tuple[OpenedIndex, VersionScores]] = {}
    for space in spaces:
        live = _score_live(store, space)
        if isinstance(live, str):
            notes.append(live)
            continue
        scored[space] = live
        retrieval[space] = live[1].result
        written.append(store.uri(index_evaluation_key(space, live[1].version)))
    gain = None
    if {"supervised", "unsupervised"} <= set(scored):
        gain = held_out_gain(scored["supervised"], scored["unsupervised"])
    return EvaluationReport(locator, retrieval, tuple(notes), tuple(written), gain)


def _stored_json(store: Store, key: str) -> dict[str, Any] | None:
    """A stored evaluation, or None when there is none (or it cannot be read)."""
    try:
        value = json.loads(store.get_bytes(key))
    except (StorageNotFound, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _locator_versions(store: Store) -> list[str]:
    """Finished locator versions (their metadata.json is there)."""
    return sorted(
        {
            info.key[len(LOCATOR_PREFIX) :].split("/", 1)[0]
            for info in store.list(LOCATOR_PREFIX)
            if info.key.endswith("/metadata.json")
        }
    )


def _by_time(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Oldest first, by the time a version's name records (its name when it has none)."""

    def when(row: dict[str, object]) -> tuple[float, str]:
        version = str(row["version"])
        return version_time(version) or 0.0, version

    return sorted(rows, key=when)


def evaluation_history(
    store: Store, spaces: Iterable[str] = SPACES, *, locator: bool = True
) -> list[dict[str, object]]:
    """Each locator and index version's stored ``evaluation.json`` numbers, oldest first
    per kind, the live one marked: the trend ``tiefvision evaluate --history`` shows.
    Versions never evaluated are listed (``evaluated: False``); nothing is computed here."""
    rows: list[dict[str, object]] = []
    if locator:
        live = store.read_pointer(LOCATOR_CURRENT)
        found = []
        for version in _locator_versions(store):
            row: dict[str, object] = {"what": "locator", "space": None, "version": version}
            row["live"] = version == live
            scores = _stored_json(store, locator_evaluation_key(version))
            row["evaluated"] = scores is not None
            if scores is not None:
                boxes = scores.get("locator") or {}
                row.update(
                    images=scores.get("images"),
                    mean_iou=boxes.get("mean_iou"),
                    share_iou_05=boxes.get("share_iou_05"),
                    share_iou_07=boxes.get("share_iou_07"),
                    fallbacks=scores.get("fallbacks"),
                    low_confidence=scores.get("low_confidence"),  # newer locators only
                )
            found.append(row)
        rows += _by_time(found)
    for space in spaces:
        found = []
        for info in list_versions(store, space):
            if not info.finished:
                continue
            row = {"what": "index", "space": space, "version": info.version, "live": info.live}
            scores = _stored_json(store, index_evaluation_key(space, info.version))
            row["evaluated"] = scores is not None
            if scores is not None:
                row.update(
                    {
                        name: scores.get(name)
                        for name in (
                            "map_at_10",
                            "precision_at_1",
                            "precision_at_5",
                            "products",
                            "queries",
                            "gallery",
                            "scope",
                        )
                    }
                )
            found.append(row)
        rows += _by_time(found)
    return rows
