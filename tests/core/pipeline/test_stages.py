"""Which training stages a pipeline run does, from what the catalog holds."""

from __future__ import annotations

from tiefvision_core.pipeline.stages import plan_training


def test_enough_boxes_and_products_train_both() -> None:
    plan = plan_training(20, 8, 0)
    assert plan.train_locator and plan.train_similarity
    assert "needs" not in plan.locator_reason + plan.similarity_reason


def test_too_few_boxes_skip_the_locator_and_say_how_to_fix_it() -> None:
    plan = plan_training(19, 8, 0)
    assert not plan.train_locator and plan.train_similarity
    assert "19 annotated photos" in plan.locator_reason
    assert "tiefvision import-boxes" in plan.locator_reason


def test_similarity_needs_products_or_annotated_triplets() -> None:
    assert not plan_training(0, 7, 0).train_similarity
    assert "needs 8 products" in plan_training(0, 7, 0).similarity_reason
    assert plan_training(0, 4, 3).train_similarity  # annotated triplets, 2 + 2 products
    assert not plan_training(0, 3, 3).train_similarity
    assert plan_training(5, 30, 0, min_boxes=5, min_products=30).train_locator
