"""Encoder geometry measured once per machine: built-in table, disk cache, the one-channel
measurement checked against the full-width one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from tiefvision_core.encoders import geometry, get_encoder
from tiefvision_core.encoders.efficientnet_lite import LITE_SPECS, lite_architecture
from tiefvision_core.encoders.geometry import GeometryKey, builtin_geometries, encoder_geometry
from tiefvision_core.encoders.torchvision_backbones import architecture


def _builder(table_key: str) -> Callable[[], nn.Module]:
    encoder, variant, _ = table_key.split("/")
    if encoder in LITE_SPECS:
        return lambda: lite_architecture(LITE_SPECS[encoder])
    return lambda: architecture(encoder, "" if variant == "-" else variant)


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[nn.Module]:
    """A spy on ``measure_geometry`` (the real one still runs), an empty process memo and an
    empty cache folder: each test starts as a new process on a new machine."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(geometry, "_MEMO", {})
    calls: list[nn.Module] = []
    real = geometry.measure_geometry

    def spy(features: nn.Module, crop_size: int = 224, **kwargs: object):
        calls.append(features)
        return real(features, crop_size, **kwargs)

    monkeypatch.setattr(geometry, "measure_geometry", spy)
    return calls


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2))


def _key(version: str = "tiny-random-00000000", crop_size: int = 32) -> GeometryKey:
    return GeometryKey("tiny", "", crop_size, version, "test 1")


def _new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(geometry, "_MEMO", {})


def _cache_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "tiefvision" / "geometry").glob("*.json"))


def test_miss_measures_once_and_writes_then_a_new_process_reads_it(
    measured: list[nn.Module], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first = encoder_geometry(_key(), _tiny)
    assert len(measured) == 1
    assert encoder_geometry(_key(), _tiny) == first and len(measured) == 1  # process memo
    (written,) = _cache_files(tmp_path)
    assert json.loads(written.read_text())["key"]["encoder_version"] == _key().encoder_version
    assert not list(written.parent.glob("*.tmp"))  # written through a temp file, renamed

    _new_process(monkeypatch)
    assert encoder_geometry(_key(), _tiny) == first
    assert len(measured) == 1  # the disk cache answered
    assert (first.stride, first.channels) == (4, 4)  # conv stride 2, then a 2×2 pool


def test_a_changed_encoder_version_or_crop_size_is_measured_again(
    measured: list[nn.Module], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    small = encoder_geometry(_key(), _tiny)
    _new_process(monkeypatch)
    encoder_geometry(_key(version="tiny-random-11111111"), _tiny)
    assert len(measured) == 2 and len(_cache_files(tmp_path)) == 2
    larger = encoder_geometry(_key(crop_size=64), _tiny)
    assert len(measured) == 3 and larger.grid != small.grid


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        '{"key": 1}',
        '{"geometry": {"stride": "x"}}',
    ],
)
def test_a_corrupt_cache_file_is_ignored_and_rewritten(
    measured: list[nn.Module], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str
) -> None:
    expected = encoder_geometry(_key(), _tiny)
    (path,) = _cache_files(tmp_path)
    path.write_text(content)
    _new_process(monkeypatch)
    assert encoder_geometry(_key(), _tiny) == expected
    assert len(measured) == 2
    assert json.loads(path.read_text())["geometry"]["stride"] == expected.stride


def test_a_file_for_another_key_is_not_trusted(
    measured: list[nn.Module], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    expected = encoder_geometry(_key(), _tiny)
    (path,) = _cache_files(tmp_path)
    stored = json.loads(path.read_text())
    stored["key"]["library"] = "test 2"
    stored["geometry"]["stride"] = 999
    path.write_text(json.dumps(stored))
    _new_process(monkeypatch)
    assert encoder_geometry(_key(), _tiny) == expected and len(measured) == 2


def test_building_builtin_encoders_measures_nothing(
    measured: list[nn.Module], tmp_path: Path
) -> None:
    lite0 = get_encoder("efficientnet_lite0")
    alexnet = get_encoder("alexnet", "none")
    assert measured == [] and _cache_files(tmp_path) == []
    assert lite0.geometry == builtin_geometries()["efficientnet_lite0/-/224"]
    assert alexnet.geometry == builtin_geometries()["alexnet/pool5-stride1/224"]


def test_any_torchvision_backbone_is_measured_once_per_machine(
    measured: list[nn.Module], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first = get_encoder("mobilenet_v2", "none").geometry
    assert len(measured) == 1 and len(_cache_files(tmp_path)) == 1
    _new_process(monkeypatch)
    assert get_encoder("mobilenet_v2", "none").geometry == first and len(measured) == 1


@pytest.mark.parametrize("table_key", sorted(builtin_geometries()))
def test_builtin_geometries_equal_measured_ones(table_key: str) -> None:
    crop_size = int(table_key.rsplit("/", 1)[1])
    measured = geometry.measure_geometry(_builder(table_key)(), crop_size)
    assert builtin_geometries()[table_key] == measured, f"{table_key}: measured {measured}"


@pytest.mark.parametrize(
    "table_key",
    [
        "alexnet/pool5-stride1/224",
        "resnet18/-/224",
        pytest.param("efficientnet_lite0/-/224", marks=pytest.mark.slow),
    ],
)
def test_one_channel_measurement_equals_the_full_width_one(table_key: str) -> None:
    features = _builder(table_key)()
    fast = geometry.measure_geometry(features, 224)
    assert fast == geometry.measure_geometry(features, 224, single_channel=False)


def test_networks_with_other_channel_parameters_fall_back_to_full_width() -> None:
    class Scaled(nn.Module):
        """A per-channel scale: a parameter the one-channel copy cannot shrink."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.scale = nn.Parameter(torch.linspace(0.5, 2.0, 8).view(1, 8, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) * self.scale

    with pytest.raises(geometry._NeedsChannels):
        geometry._single_channel(geometry._linearise(Scaled()))
    fast = geometry.measure_geometry(Scaled(), 32)
    assert fast == geometry.measure_geometry(Scaled(), 32, single_channel=False)
    assert (fast.stride, fast.receptive_field, fast.channels) == (2, 3, 8)
