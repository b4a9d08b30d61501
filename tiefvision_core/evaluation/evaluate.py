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
with a note saying why and what to do; it is not an error. How a space's version is
scored is :mod:`tiefvision_core.evaluation.spaces`, which the index's regression gate
uses too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tiefvision_core.catalog.boxes import read_boxes
from tiefvision_core.catalog.snapshot import CatalogSnapshot
from tiefvision_core.errors import StorageNotFound
from tiefvision_core.evaluation.spaces import VersionScores, held_out_gain, score_version
from tiefvision_core.locator.evaluation import evaluate_boxes
from tiefvision_core.storage.layout import (
    LOCATOR_CURRENT,
    LOCATOR_PREFIX,
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
    "evaluate_catalog",
    "evaluate_locator",
    "evaluate_space",
    "evaluation_history",
]

_COORDS = ["left", "top", "right", "bottom"]


@dataclass(frozen=True)
class EvaluationReport:
    """What ``tiefvision evaluate`` found: small, plain values (a flow result)."""

    locator: dict[str, object] | None = None
    retrieval: dict[str, dict[str, object]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    written: tuple[str, ...] = ()
    #: The supervised space's gain over the unsupervised one on its held-out products
    #: (:func:`~tiefvision_core.evaluation.spaces.held_out_gain`), when both are live.
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
    catalog: CatalogSnapshot | None = None,
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
    predicted = read_boxes(store, version, catalog=catalog)
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


def _score_live(store: Store, space: str) -> tuple[OpenedIndex, VersionScores] | str:
    opened = open_live_index(store, space)
    if opened is None:
        return f"no {space} index: `tiefvision rebuild-index --space {space}` builds it"
    scored = score_version(store, opened)
    return scored if isinstance(scored, str) else (opened, scored)


def evaluate_space(store: Store, space: str) -> tuple[dict[str, object] | None, str | None]:
    """(scores, None) of a live index space, or (None, why not); writes them to
    ``<index version>/evaluation.json`` (see
    :func:`~tiefvision_core.evaluation.spaces.score_version`)."""
    scored = _score_live(store, space)
    if isinstance(scored, str):
        return None, scored
    return scored[1].result, None


def evaluate_catalog(
    store: Store,
    annotated: pd.DataFrame | None = None,
    *,
    spaces: Iterable[str] = SPACES,
) -> EvaluationReport:
    """Locator and every live space scored, each written next to its version."""
    catalog = CatalogSnapshot.current(store)
    notes: list[str] = []
    written: list[str] = []
    locator, why = evaluate_locator(store, annotated, catalog=catalog)
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
