"""What ``tiefvision demo`` adds around the flows on a synthetic catalog: annotations for
half of the products (a person would draw them in the box editor), and the true boxes of
the other half to score the locator on photos it never saw."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tiefvision_core.catalog.boxes import read_boxes
from tiefvision_core.catalog.manifest import image_id_for, read_manifest, usable_rows
from tiefvision_core.locator.evaluation import LocatorEvaluation, evaluate_boxes
from tiefvision_core.storage.stores import Store

__all__ = ["annotated_half", "score_located"]


def _truth(catalog_dir: Path) -> pd.DataFrame:
    boxes = pd.read_csv(catalog_dir / "boxes.csv")
    boxes["image_id"] = boxes["image"].map(image_id_for)
    boxes["product"] = boxes["image"].str.split("/").str[0]
    return boxes


def annotated_half(catalog_dir: Path) -> tuple[Path, set[str]]:
    """Write the boxes of the first half of the products (by id) as an import CSV."""
    boxes = _truth(catalog_dir)
    products = sorted(boxes["product"].unique())
    chosen = set(products[: max(1, len(products) // 2)])
    path = catalog_dir / "annotated-half.csv"
    boxes[boxes["product"].isin(chosen)][["image", "left", "top", "right", "bottom"]].to_csv(
        path, index=False
    )
    return path, set(boxes.loc[boxes["product"].isin(chosen), "image_id"])


def score_located(
    store: Store, version: str, catalog_dir: Path, annotated: set[str]
) -> LocatorEvaluation:
    """IoU of the located boxes on the never-annotated photos, with both baselines."""
    sizes = usable_rows(read_manifest(store)).select(["image_id", "width", "height"]).to_pandas()
    truth = _truth(catalog_dir).merge(sizes, on="image_id")
    held_out = truth[~truth["image_id"].isin(annotated)]
    reference = truth[truth["image_id"].isin(annotated)]
    return evaluate_boxes(read_boxes(store, version), held_out, reference)
