"""Locators that need no training, for the tests of locating and of the search by photo:
small seeded heads, heads whose outputs are the same everywhere, an encoder that remembers
what it was given, and such a locator saved as a store's current one."""

from __future__ import annotations

import torch

from tiefvision_core.locator.model import LocatorHeads, TargetScaler, WindowGeometry
from tiefvision_core.locator.model_files import save_locator
from tiefvision_core.storage.stores import Store

GEOMETRY = WindowGeometry(stride=32, crop_size=224, kernel=(7, 7))
IDENTITY_SCALER = TargetScaler((0.0, 0.0, 0.0, 0.0), (1.0, 1.0, 1.0, 1.0))


def seeded_heads(channels: int = 8, kernel: tuple[int, int] = (7, 7)) -> LocatorHeads:
    """Small heads, the same on every call (seed 0), in eval mode."""
    torch.manual_seed(0)
    heads = LocatorHeads(channels, kernel, reduced=4, hidden=6, dropout=0.2)
    heads.set_channel_stats(torch.randn(channels) * 0.1, torch.rand(channels) + 0.5)
    return heads.eval()


def constant_heads(logit: float, target: tuple[float, float, float, float]) -> LocatorHeads:
    """Heads whose outputs are constant everywhere: last layers' weights zero, bias given."""
    heads = seeded_heads()
    with torch.no_grad():
        heads.classifier[-1].weight.zero_()
        heads.classifier[-1].bias.fill_(logit)
        heads.regressor[-1].weight.zero_()
        heads.regressor[-1].bias.copy_(torch.tensor(target))
    return heads


class RecordingEncoder:
    """Stride-32 maps of 8 channels; remembers each input's size."""

    name, version, device = "fake", "fake-1", torch.device("cpu")

    def __init__(self) -> None:
        self.inputs: list[tuple[int, int]] = []

    def encode_maps(self, pixels: torch.Tensor) -> torch.Tensor:
        self.inputs.append((int(pixels.shape[3]), int(pixels.shape[2])))
        return torch.ones(1, 8, pixels.shape[2] // 32, pixels.shape[3] // 32)


def saved_locator(store: Store, logit: float = 20.0):
    """A locator of :func:`constant_heads` (the whole window, score ``logit``) trained on
    ``fake-1`` at three scales, saved to ``store`` as its current locator."""
    return save_locator(
        store,
        constant_heads(logit, (0.0, 0.0, 1.0, 1.0)),
        IDENTITY_SCALER,
        geometry=GEOMETRY,
        scales=(320, 448, 576),
        threshold=0.8,
        metadata={"encoder_version": "fake-1"},
    )
