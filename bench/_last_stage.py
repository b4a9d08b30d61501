"""Lite0 split before its last stage, for the fine-tuning benches.

Why split: everything before the last stage stays frozen, so its output is computed once
per input and cached (192 channels per position at stride 32, 7× smaller than the final
1280-channel maps); an epoch then runs only the last MBConv block and the 1×1 head
convolution, which costs seconds on a CPU. ``bench/deep_ranking_finetune.py`` trains them
on triplets, ``bench/locator_finetune.py`` with the locator heads.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional

__all__ = ["LastStage", "frozen_part_of"]


def frozen_part_of(encoder: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Lite0's output before its last stage for uint8 RGB ``pixels`` (N, 3, H, W), as
    float16 (the cache's type): stem, then every stage but the last."""
    net = encoder.features
    with torch.no_grad():
        x = net.act1(net.bn1(net.conv_stem(encoder.normalise(pixels))))
        return net.blocks[:-1](x).half()


class LastStage(nn.Module):
    """Lite0's last MBConv block and head convolution with its batch norm, trainable: the
    maps the encoder would give for :func:`frozen_part_of`'s output.

    The batch norms keep their ImageNet running statistics (only their scale and shift
    learn): with a few hundred photos, batch statistics would be noise."""

    def __init__(self) -> None:
        super().__init__()
        from tiefvision_core.encoders import get_encoder

        net = get_encoder("efficientnet_lite0").features
        self.block = copy.deepcopy(net.blocks[-1])
        self.conv = copy.deepcopy(net.conv_head)
        self.bn = copy.deepcopy(net.bn2)
        self.requires_grad_(True)

    def train(self, mode: bool = True) -> LastStage:
        super().train(mode)
        for module in self.modules():  # running statistics stay the ImageNet ones
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.relu6(self.bn(self.conv(self.block(x))))
