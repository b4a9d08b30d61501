"""Locator training flow: crops dataset (built or reused) → heads → held-out evaluation.

crops (subflow, skipped parts resume) ──► train_locator_heads ──► models/locator/<version>/
                                          (early stopping,         + CURRENT switched
                                           evaluation, pictures)
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from pydantic import SecretStr

from flows._results import FLOW_RESULTS
from flows.crops import crops
from tasks.locator import train_locator_heads
from tasks.stores import get_store
from tiefvision_core.config import load_settings
from tiefvision_core.locator.crops import DEFAULT_SCALES, read_dataset
from tiefvision_core.locator.runs import LocatorRun
from tiefvision_core.locator.training import TrainConfig

__all__ = ["train_locator"]


@flow(name="train-locator", **FLOW_RESULTS)
def train_locator(
    store: str | None = None,
    encoder: str | None = None,
    weights: str = "default",
    device: Literal["auto", "cpu", "cuda"] | None = None,
    dataset: str | None = None,
    scales: tuple[int, ...] = DEFAULT_SCALES,
    test_fraction: float = 0.2,
    seed: int = 0,
    min_images: int = 20,
    fit_scales: bool = True,
    threshold: float = 0.8,
    max_epochs: int = 40,
    patience: int = 6,
    learning_rate: float = 1e-3,
    database: SecretStr | None = None,
) -> LocatorRun:
    """Train the OverFeat locator on the annotated photos and make it the current one.

    Args:
        store: storage root (default: ``TIEFVISION_STORE_URL``, else the local store).
        encoder: encoder name (default ``TIEFVISION_ENCODER``: efficientnet_lite0).
        weights: encoder weights: "default" (pretrained, offline), "none", or a .pth path.
        device: where to encode and train: auto, cpu or cuda.
        dataset: an existing crops dataset id; empty = build (or reuse) one from the
            current annotations.
        scales: longer side of each whole-image input (crops dataset parameter).
        fit_scales: add one larger side when the annotated products are narrow (crops
            dataset parameter; see the README, "Locating the product").
        test_fraction: share of annotated photos held out for early stopping and scoring.
        seed: split and training seed.
        min_images: refuse to train on fewer annotated photos.
        threshold: P(object) a position needs for its box to count at inference.
        max_epochs: upper bound on training epochs.
        patience: stop after this many epochs without a better held-out loss.
        learning_rate: AdamW learning rate.
        database: the annotations database URL (default: ``TIEFVISION_DATABASE_URL``, else
            SQLite under a local store), a secret: the run's parameters show it masked.
    """
    settings = load_settings(store_url=store, encoder=encoder, device=device)
    if dataset is None:
        built = crops(
            store=settings.store_url,
            encoder=settings.encoder,
            weights=weights,
            device=settings.device,
            scales=scales,
            test_fraction=test_fraction,
            seed=seed,
            min_images=min_images,
            fit_scales=fit_scales,
            database=database,
        )
        dataset = built.dataset_id
    else:
        read_dataset(get_store(settings.store_url), dataset)  # fails fast when missing
    config = TrainConfig(
        max_epochs=max_epochs, patience=patience, learning_rate=learning_rate, seed=seed
    )
    return train_locator_heads(settings.store_url, dataset, config, threshold, settings.device)
