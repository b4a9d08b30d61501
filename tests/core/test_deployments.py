"""Deployment names, run parameters and work-pool templates: the pure side of orchestration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tiefvision_core.deployments import (
    GPU_RESOURCE,
    check_parameters,
    cpu_pool_template,
    gpu_pool_template,
    parse_parameters,
    pick_deployment,
    split_parameters,
    typed_parameters,
    values_from_environment,
)
from tiefvision_core.errors import ConfigError, InputError

SCHEMA = {
    "type": "object",
    "properties": {
        "images": {"type": "string"},
        "encoder": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "space": {"type": "string", "enum": ["unsupervised", "supervised"]},
        "keep": {"type": "integer", "default": 3},
        "batch_size": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "scales": {"type": "array", "items": {"type": "integer"}},
        "flips": {"type": "boolean"},
    },
    "required": ["images"],
}
DEPLOYED = ["reindex/nightly", "ingest/on-demand", "encode/on-demand", "rebuild-index/on-demand"]


def test_values_are_json_when_they_parse_and_text_otherwise() -> None:
    words = ["keep=3", "flips=true", "scales=[320, 448]", "batch_size=null", "images=s3://a/b"]
    assert parse_parameters(words, SCHEMA) == {
        "keep": 3,
        "flips": True,
        "scales": [320, 448],
        "batch_size": None,
        "images": "s3://a/b",
    }
    # "=" inside the value belongs to the value; an empty value is an empty text
    assert parse_parameters(["images=/p/a=b", "encoder="]) == {"images": "/p/a=b", "encoder": ""}


def test_text_parameters_stay_text_even_when_they_look_like_json() -> None:
    parsed = parse_parameters(["encoder=123", "images=true", "space=null"], SCHEMA)
    assert parsed == {"encoder": "123", "images": "true", "space": None}
    assert parse_parameters(["encoder=123"]) == {"encoder": 123}  # no schema: JSON wins


def test_json_body_values_are_read_like_words() -> None:
    """A web body's values: text as --param reads it, typed values kept, a typed value for a
    text parameter as its JSON text (what the route accepted when it went through words)."""
    body = {"keep": "3", "scales": [320, 448], "flips": True, "encoder": 123, "space": None}
    assert typed_parameters(body, SCHEMA) == {
        "keep": 3,
        "scales": [320, 448],
        "flips": True,
        "encoder": "123",
        "space": None,
    }
    assert typed_parameters({"images": ["a", "b"]}, SCHEMA) == {"images": '["a", "b"]'}
    words = ["keep=3", "encoder=123", "images=s3://a/b"]
    assert typed_parameters(split_parameters(words), SCHEMA) == parse_parameters(words, SCHEMA)
    assert split_parameters([" keep =3", "images=a=b"]) == {"keep": "3", "images": "a=b"}


@pytest.mark.parametrize(
    ("words", "message"),
    [(["keep"], "write NAME=VALUE"), (["=3"], "write NAME=VALUE"), (["a=1", "a=2"], "twice")],
)
def test_malformed_parameters_say_how_to_write_them(words: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_parameters(words, SCHEMA)


def test_unknown_and_missing_parameters_name_what_the_deployment_takes() -> None:
    check_parameters({"images": "x", "keep": 2}, SCHEMA, "reindex/nightly")
    with pytest.raises(ConfigError, match=r"takes no parameter imagez, kep: it takes images, "):
        check_parameters({"images": "x", "imagez": 1, "kep": 2}, SCHEMA, "reindex/nightly")
    with pytest.raises(ConfigError, match=r"needs images: add --param images=VALUE"):
        check_parameters({"keep": 2}, SCHEMA, "reindex/nightly")


@pytest.mark.parametrize(
    ("name", "full"),
    [
        ("reindex/nightly", "reindex/nightly"),
        ("reindex", "reindex/nightly"),  # a flow with one deployment
        ("nightly", "reindex/nightly"),  # a deployment name used once
        (" ingest ", "ingest/on-demand"),
    ],
)
def test_a_short_name_picks_the_one_deployment_it_means(name: str, full: str) -> None:
    assert pick_deployment(name, DEPLOYED) == full


def test_unknown_or_ambiguous_names_list_what_is_deployed() -> None:
    with pytest.raises(InputError, match=r"no deployment 'reindexx'.*reindex/nightly.*deploy"):
        pick_deployment("reindexx", DEPLOYED)
    with pytest.raises(InputError, match=r"'on-demand' names 3 deployments"):
        pick_deployment("on-demand", DEPLOYED)
    with pytest.raises(InputError, match=r"\(deployed: none\)"):
        pick_deployment("reindex", [])
    with pytest.raises(InputError, match="no deployment 'reindex/daily'"):
        pick_deployment("reindex/daily", DEPLOYED)


def test_values_from_the_environment_fall_back_to_defaults() -> None:
    spec = {
        "cron": {"env": "CRON", "default": "0 2 * * *"},
        "images": {"env": "IMAGES", "help": "the catalog"},
    }
    assert values_from_environment(spec, {"IMAGES": "/p"}) == {"cron": "0 2 * * *", "images": "/p"}
    both = {"IMAGES": "/p", "CRON": " 5 4 * * * "}
    assert values_from_environment(spec, both)["cron"] == "5 4 * * *"
    with pytest.raises(ConfigError, match=r"IMAGES is not set: export it \(the catalog\)"):
        values_from_environment(spec, {"CRON": "1 1 * * *", "IMAGES": " "})


def _prefect_template(kind: str) -> dict:
    """The default job template the Prefect server hands out (bundled with prefect)."""
    import prefect

    views = Path(prefect.__file__).parent / "server/api/collections_data/views"
    metadata = json.loads((views / "aggregate-worker-metadata.json").read_text())
    collection = "prefect" if kind == "process" else f"prefect-{kind}"
    return metadata[collection][kind]["default_base_job_configuration"]


def test_pool_templates_set_the_result_storage_and_ask_for_a_gpu() -> None:
    env = {"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": "s3-bucket/results"}
    process = _prefect_template("process")
    cpu = cpu_pool_template(process, env)
    assert cpu["variables"]["properties"]["env"]["default"] == env
    assert "default" not in process["variables"]["properties"]["env"]  # input untouched

    gpu = gpu_pool_template(
        _prefect_template("kubernetes"),
        env,
        image="registry/tiefvision:gpu",
        namespace="tiefvision",
        config_map="tiefvision-env",
        secret="tiefvision-credentials",
    )
    variables = gpu["variables"]["properties"]
    assert variables["gpus"]["default"] == 1 and variables["env"]["default"] == env
    assert variables["image"]["default"] == "registry/tiefvision:gpu"
    assert variables["namespace"]["default"] == "tiefvision"
    spec = gpu["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["resources"]["limits"][GPU_RESOURCE] == "{{ gpus }}"
    assert container["resources"]["limits"]["cpu"] == "{{ cpu_limit }}"  # kept
    assert container["envFrom"] == [
        {"configMapRef": {"name": "{{ env_config_map }}"}},
        {"secretRef": {"name": "{{ env_secret }}"}},
    ]
    assert variables["env_config_map"]["default"] == "tiefvision-env"
    assert variables["env_secret"]["default"] == "tiefvision-credentials"
