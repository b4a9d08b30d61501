"""Which training stages a full pipeline run can do, decided from what the catalog holds.

A pipeline run on a catalog without annotations or product ids must still end with a
searchable index (whole photos, unsupervised space), and say why it skipped the rest; a
stage that cannot work is skipped with a reason instead of failing the run.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TrainingPlan", "plan_training"]


@dataclass(frozen=True)
class TrainingPlan:
    train_locator: bool
    locator_reason: str
    train_similarity: bool
    similarity_reason: str


def plan_training(
    boxes: int,
    products: int,
    triplets: int,
    *,
    min_boxes: int = 20,
    min_products: int = 8,
) -> TrainingPlan:
    """Train the locator with ``min_boxes`` annotated photos or more; train Deep Ranking
    with ``min_products`` products (a quarter is held out, and both sides need two) or
    with annotated triplets."""
    locator = boxes >= min_boxes
    similarity = products >= min_products or (triplets > 0 and products >= 4)
    return TrainingPlan(
        locator,
        f"{boxes} annotated photos"
        + ("" if locator else f" (needs {min_boxes}: import boxes with `tiefvision import-boxes`)"),
        similarity,
        f"{products} products, {triplets} annotated triplets"
        + (
            ""
            if similarity
            else f" (needs {min_products} products with a product_id, or annotated triplets)"
        ),
    )
