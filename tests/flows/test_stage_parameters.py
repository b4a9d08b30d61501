"""Each flow's parameters come from its stage's model (tiefvision_core.parameters): the
deployments' parameters stay what they were, the model's bounds and help reach the
Prefect form, and a run with a parameter out of bounds fails before its body runs."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema

#: Every flow's parameters as deployments knew them before the models (name → default,
#: required, JSON types), written from the flows' signatures at e44851a.
BEFORE = json.loads((Path(__file__).parents[1] / "data" / "flow_parameters_v1.json").read_text())

FLOWS = {
    "crops": "flows.crops.crops",
    "encode": "flows.encode.encode",
    "evaluate": "flows.evaluate.evaluate",
    "gc": "flows.gc.gc",
    "ingest": "flows.ingest.ingest",
    "locate": "flows.locate.locate",
    "pipeline": "flows.pipeline.pipeline",
    "rebuild-index": "flows.rebuild_index.rebuild_index",
    "reindex": "flows.reindex.reindex",
    "train-locator": "flows.train_locator.train_locator",
    "train-triplets": "flows.train_triplets.train_triplets",
}


def _flow(entrypoint: str) -> Any:
    module, name = entrypoint.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _types(prop: dict[str, Any], definitions: dict[str, Any]) -> list[str]:
    """A schema property's JSON types, whatever wraps them (refs, unions)."""
    if "$ref" in prop:
        return _types(definitions[prop["$ref"].split("/")[-1]], definitions)
    for union in ("anyOf", "allOf"):
        if union in prop:
            return sorted({t for part in prop[union] for t in _types(part, definitions)})
    if "type" in prop:
        return [prop["type"]]
    return ["string"] if "enum" in prop else ["any"]


def _summary(schema: dict[str, Any]) -> dict[str, Any]:
    definitions = schema.get("definitions", {})
    return {
        name: {
            "default": prop.get("default"),
            "required": name in schema.get("required", []),
            "types": _types(prop, definitions),
        }
        for name, prop in schema["properties"].items()
    }


def test_the_fixture_names_every_flow() -> None:
    assert sorted(BEFORE) == sorted(FLOWS)


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_each_flow_keeps_its_deployment_parameters(name: str) -> None:
    flow = _flow(FLOWS[name])
    assert flow.name == name
    assert _summary(parameter_schema(flow).model_dump()) == BEFORE[name]


def test_bounds_help_and_secrets_reach_the_form() -> None:
    rebuild = parameter_schema(_flow(FLOWS["rebuild-index"])).model_dump()["properties"]
    assert rebuild["lock_ttl"]["minimum"] == 1
    assert "heartbeat" in rebuild["lock_ttl"]["description"]
    assert rebuild["space"]["enum"] == ["unsupervised", "supervised"]
    assert next(iter(rebuild)) == "store"
    triplets = parameter_schema(_flow(FLOWS["train-triplets"])).model_dump()["properties"]
    assert {"type": "string", "format": "password", "writeOnly": True} in triplets["database"][
        "anyOf"
    ]


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_out_of_bounds_fails_before_its_body(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with pytest.raises(ParameterTypeError, match="lock_ttl"):
        _flow(FLOWS["gc"])(store=store.as_uri(), lock_ttl=0)
    assert not store.exists()  # the body never ran: nothing opened, no lock taken


def test_trigger_refuses_what_the_model_bounds_before_a_run_exists() -> None:
    from deployments.client import validate_parameters
    from tiefvision_core.errors import ConfigError

    schema = parameter_schema(_flow(FLOWS["rebuild-index"])).model_dump()
    validate_parameters({"lock_ttl": 30, "space": "supervised"}, schema, "rebuild-index")
    with pytest.raises(ConfigError, match="lock_ttl"):
        validate_parameters({"lock_ttl": 0}, schema, "rebuild-index")
    with pytest.raises(ConfigError, match="space"):
        validate_parameters({"space": "both"}, schema, "rebuild-index")
