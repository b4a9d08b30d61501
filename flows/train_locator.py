"""Locator training flow: crops dataset (built or reused) → heads → held-out evaluation.

crops (subflow, skipped parts resume) ──► train_locator_heads ──► models/locator/<version>/
                                          (early stopping,         + CURRENT switched
                                           evaluation, pictures)
"""

from __future__ import annotations

from flows._results import FLOW_RESULTS
from flows._stage import stage_flow
from flows.crops import crops
from tasks.locator import train_locator_heads
from tiefvision_core.locator.crops import read_dataset
from tiefvision_core.locator.runs import LocatorRun
from tiefvision_core.locator.training import TrainConfig
from tiefvision_core.parameters.stages import CropsParameters, TrainLocatorParameters
from tiefvision_core.run import settings_for, store_for

__all__ = ["train_locator"]


@stage_flow(TrainLocatorParameters, name="train-locator", **FLOW_RESULTS)
def train_locator(parameters: TrainLocatorParameters) -> LocatorRun:
    """Train the OverFeat locator on the annotated photos and make it the current one.

    Without a dataset, the crops subflow builds (or reuses) one from the current
    annotations; its held-out photos serve early stopping and the scores. The annotations
    database URL is a secret: the run's parameters show it masked.
    """
    settings = settings_for(**parameters.settings_flags())
    given = parameters.resolved(settings)
    dataset = given.dataset
    if dataset is None:
        dataset = crops(**given.arguments_for(CropsParameters)).dataset_id
    else:
        read_dataset(store_for(settings), dataset)  # fails fast when missing
    config = TrainConfig(
        max_epochs=given.max_epochs,
        patience=given.patience,
        learning_rate=given.learning_rate,
        seed=given.seed,
    )
    return train_locator_heads(
        settings.store_url, dataset, config, given.threshold, settings.device
    )
