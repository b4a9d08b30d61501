"""Settings: environment, overrides, and messages for invalid values."""

from __future__ import annotations

import pytest

from tiefvision_core.config import load_settings, normalise_store_url
from tiefvision_core.errors import ConfigError, one_of


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("TIEFVISION_", "AWS_")):
            monkeypatch.delenv(name)


def test_defaults_are_the_embedded_local_store(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = load_settings()
    assert settings.store_url == (tmp_path / "tiefvision" / "store").as_uri()
    assert settings.device == "auto" and settings.encoder == "efficientnet_lite0"
    assert settings.s3_endpoint_url is None


def test_environment_and_standard_aws_variables(monkeypatch) -> None:
    monkeypatch.setenv("TIEFVISION_STORE_URL", "s3://catalog/prod/")
    monkeypatch.setenv("TIEFVISION_BATCH_SIZE", "64")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000/")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    settings = load_settings()
    assert settings.store_url == "s3://catalog/prod"
    assert settings.batch_size == 64
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.aws_secret_access_key.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)
    assert settings.aws_region == "eu-west-1"


def test_cli_overrides_win_and_none_is_ignored(monkeypatch) -> None:
    monkeypatch.setenv("TIEFVISION_DEVICE", "cpu")
    assert load_settings(device="cuda").device == "cuda"
    assert load_settings(device=None).device == "cpu"


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"device": "gpu"}, ["TIEFVISION_DEVICE", "'auto', 'cpu' or 'cuda'"]),
        ({"batch_size": 0}, ["TIEFVISION_BATCH_SIZE", "greater than or equal to 1"]),
        ({"store_url": "ftp://host/x"}, ["--store", "file:// or s3://"]),
        ({"store_url": "s3://"}, ["no bucket"]),
        ({"s3_endpoint_url": "minio:9000"}, ["ENDPOINT", "http"]),
    ],
)
def test_invalid_settings_name_the_setting_and_what_is_allowed(overrides, names) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    for name in names:
        assert name in str(caught.value)


def test_secret_values_never_appear_in_errors(monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2-secret")
    with pytest.raises(ConfigError) as caught:
        load_settings(device="gpu")
    assert "hunter2" not in str(caught.value)


def test_store_url_normalisation(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalise_store_url("rel/store") == (tmp_path / "rel" / "store").as_uri()
    assert normalise_store_url("file:///data/store/") == "file:///data/store"
    assert normalise_store_url("s3://bucket") == "s3://bucket"


def test_one_of_gives_the_choice_a_string_equals_or_none() -> None:
    """What check_index_kind, check_space and --dtype build on."""
    assert one_of("cpu", ("auto", "cpu", "cuda")) == "cpu"
    assert one_of("gpu", ("auto", "cpu", "cuda")) is None
    assert one_of("CPU", ("auto", "cpu", "cuda")) is None  # exact, as the flags are
