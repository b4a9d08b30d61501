"""The one client of a configured Prefect server, shared by the CLI and the web service.

Why a module of its own: these are the only places that talk to a *configured* Prefect
server (``PREFECT_API_URL``) instead of running flows in-process. Each failure a caller can
meet here has its own type, so the CLI turns it into one line and an exit code and the web
service into an HTTP status, both by type and never by the message's wording:

- :class:`PrefectUnavailable`: no server set, or the server does not answer;
- :class:`DeploymentNotFound`: no (runnable) deployment of that name;
- :class:`~tiefvision_core.errors.ConfigError`: parameters the deployment does not take.

Pure logic (names, parameters, job templates) is in :mod:`tiefvision_core.deployments`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from tiefvision_core.deployments import check_parameters, pick_deployment, typed_parameters
from tiefvision_core.errors import ConfigError, InputError

__all__ = [
    "DeploymentNotFound",
    "PrefectUnavailable",
    "TriggeredRun",
    "deployment_names",
    "find_deployment",
    "flow_names",
    "result_of",
    "server",
    "trigger",
    "validate_parameters",
]


class PrefectUnavailable(ConfigError):
    """No Prefect server is configured, or the configured one does not answer."""


class DeploymentNotFound(InputError):
    """No deployment of that name (or several) on the server, or one that cannot run."""


@contextmanager
def server() -> Iterator[Any]:
    """A (sync) client of the configured Prefect server, checked to answer.

    Without ``PREFECT_API_URL`` Prefect would quietly start a throw-away in-process server,
    where no deployment exists: refuse instead.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise PrefectUnavailable(
            "PREFECT_API_URL is not set: point it at your Prefect server, e.g. "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api (`prefect server start` runs one)"
        )
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
        if problem is not None:
            raise PrefectUnavailable(
                f"the Prefect server at {url} does not answer ({type(problem).__name__}): "
                "start it (`prefect server start`) or fix PREFECT_API_URL"
            )
        yield client


# -- names ----------------------------------------------------------------------------------
def deployment_names(
    client: Any, more_flow_ids: Sequence[Any] = ()
) -> tuple[dict[str, Any], dict[Any, str]]:
    """Every deployment on the server by its full ``flow/deployment`` name, and the names of
    their flows and of ``more_flow_ids`` (flow id → name), read in one request."""
    deployments = client.read_deployments(limit=200)
    names = flow_names(client, [*(d.flow_id for d in deployments), *more_flow_ids])
    named = {f"{names.get(d.flow_id, '?')}/{d.name}": d for d in deployments}
    return named, names


def flow_names(client: Any, flow_ids: Sequence[Any]) -> dict[Any, str]:
    """Flow id → flow name, in one request."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterId

    ids = list(set(flow_ids))
    flows = client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=ids))) if ids else []
    return {flow.id: flow.name for flow in flows}


def find_deployment(client: Any, name: str) -> tuple[str, Any]:
    """The full name and the deployment ``name`` means (``reindex`` → ``reindex/nightly``).

    Raises :class:`DeploymentNotFound` saying what is deployed when nothing, or more than
    one, matches, and when the deployment has no work pool to run on.
    """
    deployments, _ = deployment_names(client)
    try:
        full = pick_deployment(name, list(deployments))
    except InputError as error:
        raise DeploymentNotFound(str(error)) from None
    deployment = deployments[full]
    if not deployment.work_pool_name:
        raise DeploymentNotFound(f"{full} has no work pool: deploy it again from prefect.yaml")
    return full, deployment


# -- parameters -----------------------------------------------------------------------------
def validate_parameters(
    parameters: Mapping[str, Any], schema: Mapping[str, Any], name: str
) -> None:
    """Names the deployment takes, the required ones, and each value against its schema
    (Prefect's own check), before a run exists: a wrong value is one
    :class:`~tiefvision_core.errors.ConfigError` listing every problem."""
    from prefect.utilities.schema_tools.validation import validate

    check_parameters(parameters, schema, name)
    errors = validate(dict(parameters), dict(schema), raise_on_error=False, ignore_required=True)
    if errors:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in error.path) or 'parameters'}: {error.message}"
            for error in errors
        )
        raise ConfigError(f"{name}: {detail} (see the deployment's form in the Prefect UI)")


# -- runs -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TriggeredRun:
    deployment: str
    flow_run_id: str
    flow_run_name: str
    state: str
    message: str | None
    url: str | None
    seconds: float
    result: Any = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def result_of(flow_run: Any) -> Any:
    """The run's persisted (JSON) result as plain data, or None when it cannot be read here
    (no access to the result storage from this machine is not an error of the run)."""
    from pydantic_core import to_jsonable_python

    try:
        value = flow_run.state.result(raise_on_failure=False)
    except Exception:
        return None
    return to_jsonable_python(value, fallback=str)


def trigger(
    name: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    text_as_json: bool = False,
    wait: bool = False,
    timeout: float | None = None,
    poll_seconds: float = 2.0,
) -> TriggeredRun:
    """Start a run of a deployment (``reindex``, ``reindex/nightly``) with ``parameters``
    checked against its schema first; with ``wait``, until it is final (or ``timeout``
    seconds), with its result when it completed.

    ``text_as_json``: the values are as a person gives them (``--param keep=3``, a form):
    text is read as JSON where the deployment's schema does not take it as text
    (:func:`~tiefvision_core.deployments.typed_parameters`).
    """
    from prefect.deployments import run_deployment
    from prefect.settings import get_current_settings

    with server() as client:
        full, deployment = find_deployment(client, name)
        schema = deployment.parameter_openapi_schema or {}
        given = dict(parameters or {})
        typed = typed_parameters(given, schema) if text_as_json else given
        validate_parameters({**(deployment.parameters or {}), **typed}, schema, full)

    started = time.monotonic()
    # Sync-compatible: called from sync code it returns the flow run itself.
    flow_run: Any = run_deployment(
        deployment.id,
        parameters=typed,
        timeout=timeout if wait else 0,
        poll_interval=poll_seconds,
        as_subflow=False,
    )
    state = flow_run.state
    ui = get_current_settings().ui_url
    return TriggeredRun(
        deployment=full,
        flow_run_id=str(flow_run.id),
        flow_run_name=flow_run.name,
        state=state.type.value if state else "PENDING",
        message=state.message if state else None,
        url=f"{ui.rstrip('/')}/runs/flow-run/{flow_run.id}" if ui else None,
        seconds=round(time.monotonic() - started, 1),
        result=result_of(flow_run) if wait and state and state.is_completed() else None,
    )
