"""A locator model's files on storage: :func:`save_locator` writes a new version,
:func:`load_locator` reads the current (or a named) one.

Layout (see ``docs/formats.md``)::

    models/locator/<version>/weights.pt       heads' state dict
    models/locator/<version>/metadata.json    encoder, crops dataset, annotation snapshot,
                                              hyper-parameters, metrics, evaluation
    models/locator/<version>/*.png            held-out boxes drawn, IoU histogram
    models/locator/CURRENT                    the live version, switched atomically

A model's files are written before ``CURRENT`` names it, so a reader never loads half a
model. Applying a model — to one photo or to the catalog — is
:mod:`tiefvision_core.locator.locate`.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import torch

from tiefvision_core.errors import IncompatibleModel, InputError
from tiefvision_core.locator.model import (
    BEST_POSITIONS,
    MIN_POSITIONS,
    LocatedBox,
    LocatorHeads,
    TargetScaler,
    WindowGeometry,
    locate_in_maps,
)
from tiefvision_core.storage.layout import LOCATOR_CURRENT, LOCATOR_PREFIX
from tiefvision_core.storage.stores import Store

__all__ = ["LocatorModel", "load_locator", "save_locator"]


@dataclass
class LocatorModel:
    """Trained heads plus everything needed to apply them the way they were trained."""

    version: str
    heads: LocatorHeads
    scaler: TargetScaler
    geometry: WindowGeometry
    scales: tuple[int, ...]  # the sides it locates at: measured, some of the trained ones
    threshold: float
    metadata: dict
    min_positions: int = MIN_POSITIONS
    best_positions: int = BEST_POSITIONS

    @property
    def encoder_version(self) -> str:
        return str(self.metadata["encoder_version"])

    def locate(self, maps: Sequence[tuple[torch.Tensor, tuple[float, float]]], size) -> LocatedBox:
        return locate_in_maps(
            self.heads,
            maps,
            geometry=self.geometry,
            scaler=self.scaler,
            image_size=size,
            threshold=self.threshold,
            min_positions=self.min_positions,
            best_positions=self.best_positions,
        )


def save_locator(
    store: Store,
    heads: LocatorHeads,
    scaler: TargetScaler,
    *,
    geometry: WindowGeometry,
    scales: Sequence[int],
    threshold: float,
    metadata: dict,
    locate_scales: Sequence[int] | None = None,
    files: dict[str, bytes] | None = None,
    publish: bool = True,
    min_positions: int = MIN_POSITIONS,
    best_positions: int = BEST_POSITIONS,
) -> LocatorModel:
    """Write weights, metadata and ``files`` under a new version; then switch CURRENT.
    The box rule (threshold, ``min_positions``, ``best_positions``) travels with it, and so
    do the sides it locates at (``locate_scales``, of the trained ``scales``; default all)."""
    locate_scales = tuple(scales if locate_scales is None else locate_scales)
    if not locate_scales or not set(locate_scales) <= set(scales):
        raise ValueError(f"locate sides {locate_scales} must be some of the trained {scales}")
    buffer = io.BytesIO()
    torch.save(heads.state_dict(), buffer)
    weights = buffer.getvalue()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    version = f"{stamp}-{hashlib.sha256(weights).hexdigest()[:8]}"
    prefix = f"{LOCATOR_PREFIX}{version}/"
    metadata = {
        **metadata,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "geometry": asdict(geometry),
        "scales": list(scales),
        "locate_scales": list(locate_scales),
        "threshold": threshold,
        "low_confidence_rule": {"min_positions": min_positions, "best_positions": best_positions},
        "target_mean": list(scaler.mean),
        "target_std": list(scaler.std),
        "heads": {
            "channels": int(heads.channel_mean.shape[1]),
            "kernel": list(heads.kernel),
            "reduced": heads.reduce[0].out_channels,
            "hidden": heads.classifier[0].out_channels,
            "dropout": heads.classifier[2].p,
        },
    }
    for name, data in (files or {}).items():
        store.put_bytes(prefix + name, data)
    store.put_bytes(prefix + "weights.pt", weights)
    store.put_bytes(prefix + "metadata.json", json.dumps(metadata, indent=1).encode())
    if publish:
        store.publish_pointer(LOCATOR_CURRENT, version)
    return LocatorModel(
        version,
        heads,
        scaler,
        geometry,
        locate_scales,
        threshold,
        metadata,
        min_positions,
        best_positions,
    )


def load_locator(
    store: Store, version: str | None = None, *, encoder_version: str | None = None
) -> LocatorModel:
    """The current (or a named) locator; refuses one trained on another encoder version."""
    version = version or store.read_pointer(LOCATOR_CURRENT)
    if version is None:
        raise InputError("no locator is trained yet: run `tiefvision train-locator` first")
    prefix = f"{LOCATOR_PREFIX}{version}/"
    if not store.exists(prefix + "metadata.json"):
        raise InputError(f"locator {version} does not exist under {store.uri(LOCATOR_PREFIX)}")
    metadata = json.loads(store.get_bytes(prefix + "metadata.json"))
    if encoder_version is not None and metadata["encoder_version"] != encoder_version:
        raise IncompatibleModel(
            f"locator {version} was trained on encoder {metadata['encoder_version']}, "
            f"but {encoder_version} was requested; retrain with `tiefvision train-locator` "
            "or choose the encoder it was trained with"
        )
    spec = metadata["heads"]
    heads = LocatorHeads(
        spec["channels"],
        tuple(spec["kernel"]),
        reduced=spec["reduced"],
        hidden=spec["hidden"],
        dropout=spec["dropout"],
    )
    state = torch.load(io.BytesIO(store.get_bytes(prefix + "weights.pt")), weights_only=True)
    heads.load_state_dict(state)
    heads.eval()
    geometry = WindowGeometry.from_dict(metadata["geometry"])
    scaler = TargetScaler(tuple(metadata["target_mean"]), tuple(metadata["target_std"]))
    # A model saved before the low-confidence rule gets today's defaults for it.
    rule = metadata.get("low_confidence_rule", {})
    return LocatorModel(
        version,
        heads,
        scaler,
        geometry,
        # A model saved before sides were measured locates at every side it trained on.
        tuple(metadata.get("locate_scales") or metadata["scales"]),
        metadata["threshold"],
        metadata,
        int(rule.get("min_positions", MIN_POSITIONS)),
        int(rule.get("best_positions", BEST_POSITIONS)),
    )
