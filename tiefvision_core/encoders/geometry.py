"""Measure how a convolutional network's output positions map back to input pixels.

Why measure instead of declaring: the locator turns each output position into a box in
pixels, so stride, offset and receptive field must be exact for *every* backbone — including
ones picked by name from torchvision that nobody wrote numbers down for. We measure on a
linearised copy: activations become identity, max-pools become average pools, every
convolution averages its inputs and batch norms pass through. Then all paths carry positive
weight, and the input pixels with a non-zero gradient for one output position are exactly
that position's receptive field.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tiefvision_core.encoders._api import EncoderGeometry

__all__ = ["measure_geometry"]

_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.Tanh,
    nn.Dropout,
)


def _linearise(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, _ACTIVATIONS):
            setattr(module, name, nn.Identity())
        elif isinstance(child, nn.MaxPool2d):
            setattr(
                module,
                name,
                nn.AvgPool2d(
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    ceil_mode=child.ceil_mode,
                    count_include_pad=True,
                ),
            )
        else:
            _linearise(child)
    if isinstance(module, nn.Conv2d):
        with torch.no_grad():
            module.weight.fill_(1.0 / module.weight[0].numel())
            if module.bias is not None:
                module.bias.zero_()
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        with torch.no_grad():
            module.weight.fill_(1.0)
            module.bias.zero_()
            module.running_mean.zero_()
            module.running_var.fill_(1.0 - module.eps)
    return module


def _support(grad: torch.Tensor, axis: int) -> tuple[int, int]:
    """First and last input index with a non-zero gradient along ``axis`` (2=rows, 3=cols)."""
    other = 3 if axis == 2 else 2
    line = grad.abs().sum(dim=(0, 1, other))
    nonzero = torch.nonzero(line > 0).flatten()
    return int(nonzero[0]), int(nonzero[-1])


#: Width of the probe image. With positive weights, the rows a position sees do not depend on
#: the image's width, so a tall, thin probe measures the field at a fraction of the cost.
_PROBE_WIDTH = 64


def _probe_rows(probe: nn.Module, size: int) -> int:
    with torch.no_grad():
        return probe(torch.zeros(1, 3, size, _PROBE_WIDTH, dtype=torch.float64)).shape[2]


def _field(probe: nn.Module, size: int, position: int) -> tuple[int, int]:
    """First and last input row that output row ``position`` sees."""
    image = torch.ones(1, 3, size, _PROBE_WIDTH, dtype=torch.float64, requires_grad=True)
    probe(image)[0, :, position].sum().backward()
    return _support(image.grad, 2)


def measure_geometry(features: nn.Module, crop_size: int = 224) -> EncoderGeometry:
    """Stride, receptive field and offset of ``features``, plus its grid at ``crop_size``."""
    probe = _linearise(copy.deepcopy(features)).double().eval()
    with torch.no_grad():
        out = probe(torch.zeros(1, 3, crop_size, crop_size, dtype=torch.float64))
    channels, grid = int(out.shape[1]), (int(out.shape[2]), int(out.shape[3]))

    size = 2 * crop_size
    while True:
        centre = _probe_rows(probe, size) // 2
        first, last = _field(probe, size, centre)
        if (first > 0 and last < size - 1) or size >= 4096:
            break
        size *= 2  # the field reached the border: measure again on a larger input
    next_first, _ = _field(probe, size, centre + 1)
    stride = next_first - first
    return EncoderGeometry(
        stride=stride,
        receptive_field=last - first + 1,
        offset=(first + last) / 2 - centre * stride,
        channels=channels,
        grid=grid,
    )
