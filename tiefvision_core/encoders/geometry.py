"""Measure how a convolutional network's output positions map back to input pixels.

Why measure instead of declaring: the locator turns each output position into a box in
pixels, so stride, offset and receptive field must be exact for *every* backbone — including
ones picked by name from torchvision that nobody wrote numbers down for. We measure on a
linearised copy: activations become identity, max-pools become average pools, every
convolution averages its inputs and batch norms pass through. Then all paths carry positive
weight, and the input pixels with a non-zero gradient for one output position are exactly
that position's receptive field.

Why cache it: that measurement (double precision, probes up to 3,584 pixels tall) takes 9 s
on a 2-core machine, 90 s when it is busy, and every new process — a CLI query, a flow run, an
encoding worker — used to pay it. :func:`encoder_geometry` answers from, in order: this
process's memo, the table of the built-in encoders shipped in ``builtin_geometry.json``
(checked against a fresh measurement by ``tests/core/encoders/test_geometry_cache.py``),
a per-user disk cache (``~/.cache/tiefvision/geometry/``), and only then measures — once
per machine.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path

import torch
from torch import nn

from tiefvision_core.encoders._api import EncoderGeometry
from tiefvision_core.paths import user_cache_dir

__all__ = ["GeometryKey", "builtin_geometries", "encoder_geometry", "measure_geometry"]

log = logging.getLogger(__name__)

#: Bump when :func:`measure_geometry` changes what it returns: older disk caches then miss.
MEASUREMENT_METHOD = 1

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
            # None without track_running_stats: such a layer keeps no statistics to reset.
            if module.running_mean is not None and module.running_var is not None:
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


def _field(
    probe: nn.Module, size: int, channels: int, position: int | None = None
) -> tuple[int, int, int]:
    """``(position, first, last)``: the first and last input row that output row ``position``
    sees (default: the centre row, read off the same forward pass rather than a second one)."""
    image = torch.ones(1, channels, size, _PROBE_WIDTH, dtype=torch.float64, requires_grad=True)
    out = probe(image)
    if position is None:
        position = out.shape[2] // 2
    out[0, :, position].sum().backward()
    assert image.grad is not None  # set by backward(): the probe image requires grad
    first, last = _support(image.grad, 2)
    return position, first, last


class _NeedsChannels(Exception):
    """A layer whose result depends on the channel count: measure on the full-width copy."""


def _single_channel(module: nn.Module) -> nn.Module:
    """Shrink a linearised network to one channel everywhere, in place.

    Why this is exact: in the linearised copy every convolution averages all its inputs, so
    all channels of every layer carry the same values and the same spatial support; only the
    kernels, strides, paddings and dilations decide which pixels a position sees. One channel
    keeps those and cuts the work by the channel counts (1,000× on EfficientNet-Lite0's wide
    layers). Layers that mix channels otherwise (linear, layer norm) raise ``_NeedsChannels``.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())  # linearised batch norms pass through
        else:
            _single_channel(child)
    if isinstance(module, nn.Conv2d):
        kernel = torch.full((1, 1, *module.kernel_size), 1.0 / math.prod(module.kernel_size))
        module.weight = nn.Parameter(kernel, requires_grad=False)
        module.bias = None
        module.in_channels = module.out_channels = module.groups = 1
    elif (
        next(module.parameters(recurse=False), None) is not None
        or next(module.buffers(recurse=False), None) is not None
    ):
        raise _NeedsChannels(type(module).__name__)
    return module


def _probe(features: nn.Module, single_channel: bool) -> tuple[nn.Module, int]:
    """The linearised double-precision copy to measure on, and its input channel count:
    one channel when :func:`_single_channel` applies, else the network's own width."""
    linear = _linearise(copy.deepcopy(features))
    if not single_channel:
        return linear.double().eval(), 3
    try:
        narrow = _single_channel(copy.deepcopy(linear)).double().eval()
        with torch.no_grad():
            narrow(torch.zeros(1, 1, 64, 64, dtype=torch.float64))
        return narrow, 1
    except (_NeedsChannels, RuntimeError) as why:
        log.debug("geometry measured at full width: %s", why)
        return linear.double().eval(), 3


def measure_geometry(
    features: nn.Module, crop_size: int = 224, *, single_channel: bool = True
) -> EncoderGeometry:
    """Stride, receptive field and offset of ``features``, plus its grid at ``crop_size``.

    ``single_channel=False`` measures on the full-width copy: the reference the one-channel
    shortcut is tested against.
    """
    probe, width = _probe(features, single_channel)
    training = features.training
    with torch.no_grad():
        channels = int(features.eval()(torch.zeros(1, 3, crop_size, crop_size)).shape[1])
        out = probe(torch.zeros(1, width, crop_size, crop_size, dtype=torch.float64))
    features.train(training)
    grid = (int(out.shape[2]), int(out.shape[3]))

    size = 2 * crop_size
    while True:
        centre, first, last = _field(probe, size, width)
        if (first > 0 and last < size - 1) or size >= 4096:
            break
        size *= 2  # the field reached the border: measure again on a larger input
    _, next_first, _ = _field(probe, size, width, centre + 1)
    stride = next_first - first
    return EncoderGeometry(
        stride=stride,
        receptive_field=last - first + 1,
        offset=(first + last) / 2 - centre * stride,
        channels=channels,
        grid=grid,
    )


@dataclass(frozen=True)
class GeometryKey:
    """Everything an encoder's geometry depends on, so a cached one is never applied to
    another network.

    ``encoder_version`` already covers name, variant and preprocessing (hence crop size);
    ``library`` names the package and version that define the architecture (e.g.
    ``"torchvision 0.29.1"``: a release could change a layer), and the torch release and
    :data:`MEASUREMENT_METHOD` are added when the key is written. ``encoder``, ``variant`` and
    ``crop_size`` also find the built-in table's entry, which holds for any weights.
    """

    encoder: str
    variant: str
    crop_size: int
    encoder_version: str
    library: str

    @property
    def architecture(self) -> str:
        """The built-in table's key: ``<encoder>/<variant or ->/<crop size>``."""
        return f"{self.encoder}/{self.variant or '-'}/{self.crop_size}"

    def as_dict(self) -> dict[str, object]:
        torch_release = ".".join(torch.__version__.split("+")[0].split(".")[:2])
        return {**asdict(self), "torch": torch_release, "method": MEASUREMENT_METHOD}


_MEMO: dict[str, EncoderGeometry] = {}


def encoder_geometry(key: GeometryKey, features: Callable[[], nn.Module]) -> EncoderGeometry:
    """The geometry of the network ``features()`` builds, measured at most once per machine.

    ``features`` is only called on a miss, so a hit never builds the (random-weights)
    architecture copy that measuring needs.
    """
    disk_key = json.dumps(key.as_dict(), sort_keys=True)
    found = _MEMO.get(disk_key) or builtin_geometries().get(key.architecture)
    if found is None:
        path = _cache_file(disk_key)
        found = _read_cached(path, key.as_dict())
        if found is None:
            log.info("measuring the geometry of %s (once: cached in %s)", key.encoder, path)
            found = measure_geometry(features(), key.crop_size)
            _write_cached(path, key.as_dict(), found)
    _MEMO[disk_key] = found
    return found


@cache
def builtin_geometries() -> dict[str, EncoderGeometry]:
    """The shipped table: architecture key → geometry, for the encoders built in."""
    text = (files("tiefvision_core.encoders") / "builtin_geometry.json").read_text()
    table = json.loads(text)["geometries"]
    return {name: _parse(entry) for name, entry in table.items()}


def _parse(entry: dict) -> EncoderGeometry:
    """A geometry from JSON, refusing anything malformed (``ValueError``/``TypeError``)."""
    geometry = EncoderGeometry(
        stride=int(entry["stride"]),
        receptive_field=int(entry["receptive_field"]),
        offset=float(entry["offset"]),
        channels=int(entry["channels"]),
        grid=(int(entry["grid"][0]), int(entry["grid"][1])),
    )
    if len(entry["grid"]) != 2 or min(geometry.stride, geometry.receptive_field) < 1:
        raise ValueError(f"not a geometry: {entry!r}")
    return geometry


def _cache_file(disk_key: str) -> Path:
    digest = hashlib.sha256(disk_key.encode()).hexdigest()[:24]
    return user_cache_dir() / "geometry" / f"{digest}.json"


def _read_cached(path: Path, key: dict[str, object]) -> EncoderGeometry | None:
    """The cached geometry, or ``None`` when absent, unreadable, corrupt or for another key
    (a hash collision or a hand-copied file): those are measured again and overwritten."""
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") != key:
            return None
        return _parse(stored["geometry"])
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


def _write_cached(path: Path, key: dict[str, object], geometry: EncoderGeometry) -> None:
    """Write atomically (temp file + rename): a reader never sees half a file, and two
    processes measuring at once both write the same answer."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "geometry": asdict(geometry)}, indent=1))
        os.replace(tmp, path)
    except OSError:
        log.warning("could not cache the encoder geometry in %s", path)
