"""The shared Prefect client (deployments/client.py) against a stand-in server: which
deployment a name picks, how parameters reach ``run_deployment``, and which error type each
failure raises (callers map types to exit codes and HTTP statuses, never message text).
The real server is tests/flows/test_deployments_e2e.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from deployments import client
from deployments.client import DeploymentNotFound, PrefectUnavailable
from tests.conftest import free_port
from tiefvision_core.errors import ConfigError, InputError, TiefVisionError

FLOW_ID = uuid.uuid4()
SCHEMA = {
    "type": "object",
    "properties": {
        "images": {"type": "string"},
        "encoder": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "keep": {"type": "integer", "default": 3},
    },
    "required": ["images"],
}


class FakeServer:
    """What the client reads from a Prefect server: deployments and flow names."""

    def __init__(self, *, work_pool: str | None = "tiefvision-cpu") -> None:
        self.deployment = SimpleNamespace(
            id=uuid.uuid4(),
            name="nightly",
            flow_id=FLOW_ID,
            parameters={"images": "s3://photos/catalog"},
            parameter_openapi_schema=SCHEMA,
            work_pool_name=work_pool,
        )

    def read_deployments(self, limit: int) -> list[Any]:
        return [self.deployment]

    def read_flows(self, flow_filter: Any) -> list[Any]:
        return [SimpleNamespace(id=FLOW_ID, name="reindex")]


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The parameters of every run started, with the stand-in server in place."""
    runs: list[dict[str, Any]] = []

    def run_deployment(deployment_id: Any, *, parameters: dict[str, Any], **_: Any) -> Any:
        runs.append(parameters)
        state = SimpleNamespace(type=SimpleNamespace(value="SCHEDULED"), message=None)
        return SimpleNamespace(id=uuid.uuid4(), name="brave-fox", state=state)

    monkeypatch.setattr("prefect.deployments.run_deployment", run_deployment)
    use_server(monkeypatch, FakeServer())
    return runs


def use_server(monkeypatch: pytest.MonkeyPatch, fake: FakeServer) -> None:
    @contextmanager
    def server() -> Iterator[FakeServer]:
        yield fake

    monkeypatch.setattr(client, "server", server)


def test_typed_parameters_reach_the_run_as_given(started: list[dict[str, Any]]) -> None:
    run = client.trigger("reindex", {"keep": 5, "encoder": "lite0"})
    assert run.deployment == "reindex/nightly" and run.state == "SCHEDULED"
    assert started == [{"keep": 5, "encoder": "lite0"}]


def test_text_values_are_read_as_json_only_with_text_as_json(
    started: list[dict[str, Any]],
) -> None:
    client.trigger("nightly", {"keep": "4", "encoder": 123}, text_as_json=True)
    assert started == [{"keep": 4, "encoder": "123"}]  # a text parameter stays text
    with pytest.raises(ConfigError, match="keep"):
        client.trigger("nightly", {"keep": "4"})  # typed: "4" is not an integer
    assert len(started) == 1  # nothing started on a wrong value


def test_unknown_parameters_are_a_config_error_before_any_run(
    started: list[dict[str, Any]],
) -> None:
    with pytest.raises(ConfigError, match="takes no parameter colour") as raised:
        client.trigger("reindex", {"colour": "red"})
    assert not isinstance(raised.value, (PrefectUnavailable, DeploymentNotFound))
    assert started == []


def test_unknown_or_unrunnable_deployments_are_deployment_not_found(
    monkeypatch: pytest.MonkeyPatch, started: list[dict[str, Any]]
) -> None:
    with pytest.raises(DeploymentNotFound, match="no deployment 'reindexx'"):
        client.trigger("reindexx")
    use_server(monkeypatch, FakeServer(work_pool=None))
    with pytest.raises(DeploymentNotFound, match="has no work pool"):
        client.trigger("reindex")
    assert started == []
    assert issubclass(DeploymentNotFound, InputError)  # the CLI's one line and exit code 2


def test_an_unset_or_silent_server_is_prefect_unavailable() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    assert issubclass(PrefectUnavailable, TiefVisionError)
    unset = temporary_settings(updates={PREFECT_API_URL: None})
    with unset, pytest.raises(PrefectUnavailable, match="PREFECT_API_URL is not set"):
        client.trigger("reindex")
    silent = temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"})
    with silent, pytest.raises(PrefectUnavailable, match="does not answer"):
        client.trigger("reindex")
