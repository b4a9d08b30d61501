"""The stage parameter models: what they hand to the settings, to a flow and to a subflow,
and that their defaults are the stages' own."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from tiefvision_core.config import load_settings
from tiefvision_core.parameters import stages
from tiefvision_core.parameters.stages import (
    DEFAULT_SCALES,
    EncodeParameters,
    GcParameters,
    RebuildIndexParameters,
    ReindexParameters,
    TrainLocatorParameters,
    TrainTripletsParameters,
)


def test_defaults_spelled_in_the_models_are_the_stages_constants() -> None:
    # The models stay free of torch and pyarrow, so two defaults are spelled twice.
    from tiefvision_core.locator import crops
    from tiefvision_core.vector_index.versions import STAGING_GRACE_S

    assert DEFAULT_SCALES == crops.DEFAULT_SCALES
    assert GcParameters().grace_hours * 3600 == STAGING_GRACE_S
    assert ReindexParameters(images="x").gc_grace_hours * 3600 == STAGING_GRACE_S


def test_settings_flags_name_the_settings_each_field_overrides() -> None:
    given = RebuildIndexParameters(store="file:///s", device="cpu", tolerance=0.05)
    assert given.settings_flags() == {
        "store_url": "file:///s",
        "encoder": None,
        "device": "cpu",
        "batch_size": None,
        "regression_tolerance": 0.05,
    }


def test_resolved_takes_what_the_settings_decided(tmp_path) -> None:
    settings = load_settings(store_url=(tmp_path / "s").as_uri(), encoder="resnet18")
    resolved = ReindexParameters(images="x", keep=5).resolved(settings)
    assert resolved.store == settings.store_url and resolved.encoder == "resnet18"
    assert resolved.tolerance == settings.regression_tolerance
    assert resolved.retention == settings.retention
    assert resolved.keep == 5 and resolved.images == "x"  # the stage's own: as given


def test_the_database_url_reaches_the_settings_but_stays_masked_in_flow_arguments(
    tmp_path,
) -> None:
    url = "postgresql+psycopg://user:hunter2@db/annotations"
    given = TrainTripletsParameters(database=url)
    assert given.settings_flags()["database_url"] == url
    settings = load_settings(store_url=(tmp_path / "s").as_uri(), database_url=url)
    arguments = given.resolved(settings).arguments()
    assert isinstance(arguments["database"], SecretStr)
    assert "hunter2" not in repr(arguments)


def test_a_subflows_arguments_are_the_shared_fields_validated_by_its_model() -> None:
    parent = RebuildIndexParameters(store="file:///s", weights="none", keep=9, lock_ttl=5)
    arguments = parent.arguments_for(EncodeParameters, kind="box")
    assert set(arguments) == set(EncodeParameters.model_fields)
    assert arguments["store"] == "file:///s" and arguments["weights"] == "none"
    assert arguments["kind"] == "box" and "keep" not in arguments
    with pytest.raises(ValidationError, match="kind"):
        parent.arguments_for(EncodeParameters, kind="crop")


@pytest.mark.parametrize(
    ("model", "values", "field"),
    [
        (RebuildIndexParameters, {"lock_ttl": 0}, "lock_ttl"),
        (RebuildIndexParameters, {"space": "both"}, "space"),
        (TrainTripletsParameters, {"margin": 2.5}, "margin"),
        (TrainLocatorParameters, {"threshold": 1.0}, "threshold"),
        (EncodeParameters, {"batch_size": 0}, "batch_size"),
        (GcParameters, {"lock_ttl": 120, "keep": 3}, "keep"),  # gc keeps no index versions
    ],
)
def test_out_of_bounds_and_unknown_parameters_are_refused(model, values, field) -> None:
    with pytest.raises(ValidationError, match=field):
        model.model_validate(values)


def test_every_field_has_help_for_the_form_and_the_command_line() -> None:
    missing = [
        f"{name}.{field}"
        for name in stages.__all__
        for field, info in getattr(stages, name).model_fields.items()
        if not info.description
    ]
    assert not missing


def test_the_form_lists_the_store_first_then_the_stages_own_fields() -> None:
    order = RebuildIndexParameters.field_order()
    assert order[:4] == ["store", "space", "index_kind", "keep"]
    assert sorted(order) == sorted(RebuildIndexParameters.model_fields)


@pytest.mark.parametrize("empty", ["", SecretStr("")])
def test_an_empty_database_url_is_not_given(empty: object) -> None:
    # `--database "$DB"` with DB unset: the settings decide, as without the flag.
    given = TrainTripletsParameters.model_validate({"database": empty})
    assert given.database is None and "database_url" not in given.settings_flags()
