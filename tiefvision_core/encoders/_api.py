"""What an encoder is, and the registry that finds one by name.

Modelled on torchvision's ``models/_api.py``: *weights are data*. An encoder bundles the
convolutional network, where its weights came from, the preprocessing those weights were
trained with, the geometry of its output grid, and a version string. Every stored encoding
carries that version, so a change of weights or preprocessing can never be mixed silently
with older encodings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from tiefvision_core.errors import ConfigError

__all__ = [
    "Encoder",
    "EncoderGeometry",
    "Preprocessing",
    "WeightsSource",
    "encoder_version",
    "file_digest",
    "get_encoder",
    "list_encoders",
    "register_encoder",
]

WeightsKind = Literal["wheel", "torchvision", "file", "none"]
#: What a user may pass as ``weights``: "default", "none", a torchvision enum member name
#: such as "IMAGENET1K_V1", or a path to a local ``.pth`` state dict.
WeightsArg = str | Path | None


@dataclass(frozen=True)
class Preprocessing:
    """How RGB pixels become the network's input; part of the encoder's version.

    ``crop_size`` is the canonical side of a fixed-grid crop: every crop is resized to it, so
    all crops of one encoder give the same grid (7×7 for a stride-32 network at 224).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_size: int = 224
    interpolation: str = "bilinear"


IMAGENET = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@dataclass(frozen=True)
class WeightsSource:
    """Where the weights came from. ``tag`` is short and stable; it enters the version."""

    kind: WeightsKind
    reference: str
    tag: str


@dataclass(frozen=True)
class EncoderGeometry:
    """How output positions map back to input pixels (measured, see ``geometry.py``).

    Position ``i`` along an axis is centred on input pixel ``offset + i * stride`` and sees
    ``receptive_field`` pixels around it. ``grid`` is the output size for a canonical crop.
    """

    stride: int
    receptive_field: int
    offset: float
    channels: int
    grid: tuple[int, int]

    def centre(self, index: float) -> float:
        """The input-pixel coordinate of the centre of output position ``index``."""
        return self.offset + index * self.stride


class Encoder(nn.Module):
    """The convolutional part of an ImageNet CNN, with its preprocessing and metadata.

    Input to :meth:`encode_maps` is RGB as ``uint8`` (N, 3, H, W) or float in [0, 1]:
    normalisation happens here, on the model's device, so callers ship 4× fewer bytes to a
    GPU and can never forget or double-apply it.
    """

    # Buffers (registered in __init__, moved with the module): declared for the type checker,
    # which otherwise sees nn.Module.__getattr__'s Tensor | Module.
    _mean: torch.Tensor
    _std: torch.Tensor

    def __init__(
        self,
        name: str,
        features: nn.Module,
        *,
        weights: WeightsSource,
        preprocessing: Preprocessing,
        geometry: EncoderGeometry,
        variant: str = "",
    ) -> None:
        super().__init__()
        self.name = name
        self.features = features.eval()
        self.weights = weights
        self.preprocessing = preprocessing
        self.geometry = geometry
        self.variant = variant
        self.register_buffer("_mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1))
        self.register_buffer("_std", torch.tensor(preprocessing.std).view(1, 3, 1, 1))
        self.requires_grad_(False)

    @property
    def version(self) -> str:
        """``<name>-<weights tag>-<8 hex>``: changes with weights, preprocessing or variant."""
        return encoder_version(self.name, self.weights, self.preprocessing, self.variant)

    @property
    def channels(self) -> int:
        return self.geometry.channels

    @property
    def device(self) -> torch.device:
        return self._mean.device

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float RGB → the standardised input the weights expect."""
        if batch.dtype == torch.uint8:
            batch = batch.to(self._mean.dtype).div_(255.0)
        return (batch - self._mean) / self._std

    def encode_maps(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB → (N, C, H', W') feature maps, one encoding per position."""
        return self.features(self.normalise(batch))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.encode_maps(batch)

    def describe(self) -> dict[str, object]:
        """Metadata stored with every encoding shard and model that uses this encoder."""
        return {
            "encoder": self.name,
            "encoder_version": self.version,
            "weights": asdict(self.weights),
            "preprocessing": asdict(self.preprocessing),
            "geometry": asdict(self.geometry),
            "variant": self.variant,
        }


def encoder_version(
    name: str, weights: WeightsSource, preprocessing: Preprocessing, variant: str = ""
) -> str:
    """An encoder's version from its parts, so a builder can know it before the encoder
    exists (its geometry is cached under it, see ``geometry.py``)."""
    identity = json.dumps(
        {
            "name": name,
            "weights": asdict(weights),
            "preprocessing": asdict(preprocessing),
            "variant": variant,
        },
        sort_keys=True,
    )
    return f"{name}-{weights.tag}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"


@cache
def file_digest(path: str) -> str:
    """First 8 hex of a weights file's SHA-256: a local file's identity in the version."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:8]


EncoderBuilder = Callable[[WeightsArg], Encoder]
#: A family of encoders too large to list (every torchvision classifier): name → its
#: builder, or None when the name is not one of the family's.
EncoderFamily = Callable[[str], EncoderBuilder | None]
_REGISTRY: dict[str, EncoderBuilder] = {}
_FAMILIES: list[EncoderFamily] = []


def register_encoder(name: str) -> Callable[[EncoderBuilder], EncoderBuilder]:
    """Decorator: make ``builder(weights) -> Encoder`` available as ``get_encoder(name)``.

    The family modules use it at import time; ``tiefvision_core.encoders`` imports them
    (as torchvision's ``models/__init__`` does), so this module never imports them back."""

    def wrap(builder: EncoderBuilder) -> EncoderBuilder:
        if name in _REGISTRY:
            raise ValueError(f"encoder {name!r} registered twice")
        _REGISTRY[name] = builder
        return builder

    return wrap


def register_encoder_family(family: EncoderFamily) -> EncoderFamily:
    """Decorator: ask ``family(name)`` for a builder when no encoder of that name is
    registered (asked in registration order, after the registry)."""
    _FAMILIES.append(family)
    return family


def list_encoders() -> list[str]:
    """Names with a dedicated builder; any torchvision classification model also works."""
    return sorted(_REGISTRY)


def get_encoder(name: str, weights: WeightsArg = "default") -> Encoder:
    """Build an encoder by name, in eval mode on the CPU.

    ``weights``: ``"default"`` (the encoder's pretrained weights, never downloaded here),
    ``"none"`` (random, seeded: an explicit choice, e.g. for tests and baselines), a
    torchvision weights name such as ``"IMAGENET1K_V1"``, or a path to a ``.pth`` file.
    """
    builder = _REGISTRY.get(name)
    for family in _FAMILIES if builder is None else ():
        builder = family(name)
        if builder is not None:
            break
    if builder is None:
        raise ConfigError(
            f"unknown encoder {name!r}: choose one of {', '.join(list_encoders())}, "
            "or any torchvision classification model name (e.g. resnet50)"
        )
    return builder(weights)
