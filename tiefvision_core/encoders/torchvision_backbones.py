"""Encoders from torchvision: AlexNet (the original TiefVision's choice) and any classifier.

Weights go through torchvision's weight API (``AlexNet_Weights.IMAGENET1K_V1`` …), which reads
the torch hub cache. This machine has no network, so we look in the cache *before* asking
torchvision, and when the file is absent we say exactly where to put it instead of letting
torchvision start a download.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from tiefvision_core.encoders._api import (
    IMAGENET,
    Encoder,
    EncoderBuilder,
    EncoderGeometry,
    Preprocessing,
    WeightsArg,
    WeightsSource,
    encoder_version,
    file_digest,
    register_encoder,
    register_encoder_family,
)
from tiefvision_core.encoders.geometry import GeometryKey, encoder_geometry
from tiefvision_core.errors import ConfigError, WeightsNotFound

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

__all__ = [
    "build_alexnet",
    "hub_checkpoint_path",
    "is_torchvision_classifier",
    "torchvision_classifier",
]


def is_torchvision_classifier(name: str) -> bool:
    from torchvision import models

    return name in models.list_models(module=models)


def hub_checkpoint_path(weights: WeightsEnum) -> Path:
    """Where ``torch.hub`` keeps (or would download) the file of a torchvision weights enum."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def _resolve(name: str, weights: WeightsArg) -> tuple[dict | None, WeightsSource, Preprocessing]:
    """The state dict (``None`` for random), where it came from, and its preprocessing."""
    from torchvision import models

    if weights in ("none", None):
        return None, WeightsSource("none", "random, seed 0", "random"), IMAGENET
    enum = models.get_model_weights(name)
    if weights == "default" or weights in enum.__members__:
        member = enum.DEFAULT if weights == "default" else enum[str(weights)]
        cached = hub_checkpoint_path(member)
        if not cached.is_file():
            raise WeightsNotFound(
                f"{member} weights are not on this machine: copy {cached.name} (from "
                f"{member.url}) to {cached}, or pass --weights PATH to a local .pth file "
                "(--weights none for random weights, on purpose only)"
            )
        transforms = member.transforms()
        prep = Preprocessing(
            mean=tuple(transforms.mean),
            std=tuple(transforms.std),
            crop_size=transforms.crop_size[0],
        )
        state = member.get_state_dict(progress=False)  # reads the cache file found above
        return state, WeightsSource("torchvision", str(member), member.name.lower()), prep
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsNotFound(
            f"weights {weights!r} for {name}: not a file and not one of "
            f"{', '.join(['default', 'none', *enum.__members__])}"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state, WeightsSource("file", str(path), f"file{file_digest(str(path))}"), IMAGENET


def _classifier(name: str, state: dict | None) -> nn.Module:
    from torchvision import models

    torch.manual_seed(0)  # random weights are reproducible when asked for
    model = models.get_model(name, weights=None)
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model.eval()


def convolutional_part(model: nn.Module) -> nn.Module:
    """Everything before global pooling: ``.features`` where torchvision has it (AlexNet,
    VGG, EfficientNet, MobileNet, ConvNeXt), else the children up to the pooling (ResNet)."""
    features = getattr(model, "features", None)
    if isinstance(features, nn.Module):
        return features
    kept = []
    for child in model.children():
        if isinstance(child, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d | nn.Flatten | nn.Linear):
            break
        kept.append(child)
    if not kept:
        raise ConfigError(f"cannot find the convolutional part of {type(model).__name__}")
    return nn.Sequential(*kept)


def architecture(name: str, variant: str = "") -> nn.Module:
    """The convolutional part with random weights: what measuring the geometry needs."""
    features = convolutional_part(_classifier(name, None))
    if variant == "pool5-stride1":
        _pool5_stride1(features)
    return features


def _geometry(
    name: str, variant: str, source: WeightsSource, prep: Preprocessing
) -> EncoderGeometry:
    import torchvision

    key = GeometryKey(
        encoder=name,
        variant=variant,
        crop_size=prep.crop_size,
        encoder_version=encoder_version(name, source, prep, variant),
        library=f"torchvision {torchvision.__version__}",
    )
    return encoder_geometry(key, lambda: architecture(name, variant))


def _pool5_stride1(features: nn.Module) -> None:
    """The seed's change: AlexNet's last max-pool with stride 1 keeps spatial resolution."""
    if not isinstance(features, nn.Sequential):
        raise ConfigError("expected AlexNet's features to be a sequence of layers")
    last = len(features) - 1
    pool = features[last]
    if not isinstance(pool, nn.MaxPool2d):
        raise ConfigError("expected AlexNet's features to end with a max-pool")
    features[last] = nn.MaxPool2d(kernel_size=pool.kernel_size, stride=1, padding=pool.padding)


def torchvision_backbone(name: str, weights: WeightsArg = "default", variant: str = "") -> Encoder:
    """Any torchvision classification model, cut before its global pooling."""
    state, source, prep = _resolve(name, weights)
    features = convolutional_part(_classifier(name, state))
    if variant == "pool5-stride1":
        _pool5_stride1(features)
    return Encoder(
        name,
        features,
        weights=source,
        preprocessing=prep,
        geometry=_geometry(name, variant, source, prep),
        variant=variant,
    )


@register_encoder("alexnet")
def build_alexnet(weights: WeightsArg = "default") -> Encoder:
    """AlexNet's convolutional part, last max-pool at stride 1: 256 channels, stride 16."""
    return torchvision_backbone("alexnet", weights, variant="pool5-stride1")


@register_encoder_family
def torchvision_classifier(name: str) -> EncoderBuilder | None:
    """Any other torchvision classification model by its name (``resnet50`` …)."""
    if not is_torchvision_classifier(name):
        return None
    return lambda weights: torchvision_backbone(name, weights)
