"""The Prefect server side of the command line: setup, deployment runs, a deploy-time step.

Why a module of its own: these are the only places that talk to a *configured* Prefect
server (``PREFECT_API_URL``) instead of running flows in-process, and each failure a user
can meet here (no server set, server down, unknown deployment, wrong parameter) must
become one line saying what to do. Pure logic (names, parameters, job templates) is in
:mod:`tiefvision_core.deployments`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from tiefvision_core.deployments import (
    check_parameters,
    cpu_pool_template,
    gpu_pool_template,
    parse_parameters,
    pick_deployment,
    values_from_environment,
)
from tiefvision_core.errors import ConfigError, InputError

__all__ = [
    "CPU_POOL",
    "CREDENTIALS_BLOCK",
    "GPU_POOL",
    "RESULTS_BLOCK",
    "environment",
    "setup_prefect",
    "trigger",
]

CPU_POOL = "tiefvision-cpu"
GPU_POOL = "tiefvision-gpu"
CREDENTIALS_BLOCK = "tiefvision-s3"
RESULTS_BLOCK = "tiefvision-results"
#: The pools' default run environment: flow results go to the S3 bucket block.
RESULT_ENV = {"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": f"s3-bucket/{RESULTS_BLOCK}"}


def environment(**spec: Mapping[str, str]) -> dict[str, str]:
    """prefect.yaml build step: values from the deployer's environment, with defaults.

    Used as ``tiefvision_cli.orchestration.environment`` (``id: nightly``) so the file can
    say ``cron: "{{ nightly.cron }}"`` and still deploy when the variable is unset.
    """
    return values_from_environment(spec, os.environ)


@contextmanager
def _server() -> Iterator[Any]:
    """A client of the configured Prefect server, checked to answer.

    Without ``PREFECT_API_URL`` Prefect would quietly start a throw-away in-process server,
    where no deployment exists: refuse instead.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise ConfigError(
            "PREFECT_API_URL is not set: point it at your Prefect server, e.g. "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api (`prefect server start` runs one)"
        )
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
        if problem is not None:
            raise ConfigError(
                f"the Prefect server at {url} does not answer ({type(problem).__name__}): "
                "start it (`prefect server start`) or fix PREFECT_API_URL"
            )
        yield client


# -- setup ----------------------------------------------------------------------------------
def _save_result_storage(bucket: str, folder: str, endpoint: str | None) -> str:
    """The ``S3Bucket`` block (with its ``AwsCredentials``) results are written to."""
    from prefect_aws import AwsCredentials, S3Bucket
    from prefect_aws.client_parameters import AwsClientParameters

    from tiefvision_core.config import load_settings
    from tiefvision_core.storage.stores import open_store

    settings = load_settings(s3_endpoint_url=endpoint)
    # Fail here, not in the first nightly run: the bucket must exist and let us in.
    open_store(f"s3://{bucket}/{folder}", settings)
    key_id, secret = settings.aws_access_key_id, settings.aws_secret_access_key
    credentials = AwsCredentials(
        aws_access_key_id=key_id.get_secret_value() if key_id else None,
        aws_secret_access_key=secret,
        region_name=settings.aws_region,
        aws_client_parameters=AwsClientParameters(endpoint_url=settings.s3_endpoint_url),
    )
    credentials.save(CREDENTIALS_BLOCK, overwrite=True)
    S3Bucket(bucket_name=bucket, bucket_folder=folder, credentials=credentials).save(
        RESULTS_BLOCK, overwrite=True
    )
    where = settings.s3_endpoint_url or "AWS"
    return f"s3://{bucket}/{folder} on {where}"


def _put_pool(client: Any, name: str, kind: str, template: dict[str, Any], description: str) -> str:
    """Create the pool, or update the template and description of an existing one (its
    pause state and concurrency limit stay as the operator left them)."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists

    try:
        client.create_work_pool(
            WorkPoolCreate(
                name=name, type=kind, base_job_template=template, description=description
            )
        )
        return "created"
    except ObjectAlreadyExists:
        existing = client.read_work_pool(name)
        if existing.type != kind:
            raise ConfigError(
                f"work pool {name} exists with type {existing.type}, not {kind}: delete it "
                f"(`prefect work-pool delete {name}`) and run setup-prefect again"
            ) from None
        client.update_work_pool(
            name, WorkPoolUpdate(base_job_template=template, description=description)
        )
        return "updated"


def _default_template(client: Any, collection: str, kind: str) -> dict[str, Any]:
    """A worker type's default job template, as the server knows it (bundled offline)."""
    metadata = client.read_worker_metadata()
    return metadata[collection][kind]["default_base_job_configuration"]


GPU_POOL_TYPES = ("kubernetes", "process")


def setup_prefect(
    *,
    bucket: str,
    folder: str = "prefect-results",
    endpoint: str | None = None,
    gpu_pool_type: str = "kubernetes",
    gpu_image: str = "tiefvision:gpu",
    namespace: str = "tiefvision",
) -> dict[str, str]:
    """Result storage blocks and both work pools on the configured server (idempotent).

    The GPU pool is Kubernetes by default (one job per flow run, requesting a GPU); with
    ``gpu_pool_type="process"`` it is a process pool for a worker that runs on a GPU host
    itself (infra/compose.yaml's ``worker-gpu``).
    """
    if gpu_pool_type not in GPU_POOL_TYPES:
        raise ConfigError(f"--gpu-pool-type {gpu_pool_type!r}: choose kubernetes or process")
    with _server() as client:
        done = {"result_storage": _save_result_storage(bucket, folder, endpoint)}
        process = _default_template(client, "prefect", "process")
        done[CPU_POOL] = _put_pool(
            client,
            CPU_POOL,
            "process",
            cpu_pool_template(process, RESULT_ENV),
            "TiefVision CPU stages (ingest, rebuild-index, nightly reindex): each flow run is "
            "a process that inherits the worker's environment (store URL, credentials).",
        )
        if gpu_pool_type == "process":
            gpu = cpu_pool_template(process, RESULT_ENV)
        else:
            gpu = gpu_pool_template(
                _default_template(client, "prefect-kubernetes", "kubernetes"),
                RESULT_ENV,
                image=gpu_image,
                namespace=namespace,
                config_map="tiefvision-env",
                secret="tiefvision-credentials",
            )
        done[GPU_POOL] = _put_pool(
            client,
            GPU_POOL,
            gpu_pool_type,
            gpu,
            "TiefVision GPU stages (encode, crops, locate, train-locator, train-triplets): "
            + (
                "one Kubernetes job per flow run, one GPU each (job variable `gpus`)."
                if gpu_pool_type == "kubernetes"
                else "flow runs are processes of a worker on a GPU host."
            ),
        )
        return done


# -- trigger --------------------------------------------------------------------------------
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


def _deployment_names(
    client: Any, more_flow_ids: Sequence[Any] = ()
) -> tuple[dict[str, Any], dict[Any, str]]:
    """Every deployment on the server by its full ``flow/deployment`` name, and the names of
    their flows and of ``more_flow_ids`` (flow id → name), read in one request."""
    deployments = client.read_deployments(limit=200)
    flow_names = _flow_names(client, [*(d.flow_id for d in deployments), *more_flow_ids])
    named = {f"{flow_names.get(d.flow_id, '?')}/{d.name}": d for d in deployments}
    return named, flow_names


def _flow_names(client: Any, flow_ids: Sequence[Any]) -> dict[Any, str]:
    """Flow id → flow name, in one request."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterId

    ids = list(set(flow_ids))
    flows = client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=ids))) if ids else []
    return {flow.id: flow.name for flow in flows}


def _validate(parameters: dict[str, Any], schema: dict[str, Any], name: str) -> None:
    from prefect.utilities.schema_tools.validation import validate

    check_parameters(parameters, schema, name)
    errors = validate(parameters, schema, raise_on_error=False, ignore_required=True)
    if errors:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in error.path) or 'parameters'}: {error.message}"
            for error in errors
        )
        raise ConfigError(f"{name}: {detail} (see the deployment's form in the Prefect UI)")


def _result_of(flow_run: Any) -> Any:
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
    params: Sequence[str] = (),
    *,
    wait: bool = False,
    timeout: float | None = None,
    poll_seconds: float = 2.0,
) -> TriggeredRun:
    """Start a run of a deployment (``reindex``, ``reindex/nightly``) with ``NAME=VALUE``
    parameters checked against its schema first; with ``wait``, until it is final."""
    from prefect.deployments import run_deployment
    from prefect.settings import get_current_settings

    with _server() as client:
        deployments, _ = _deployment_names(client)
        full = pick_deployment(name, list(deployments))
        deployment = deployments[full]
        schema = deployment.parameter_openapi_schema or {}
        parameters = parse_parameters(params, schema)
        _validate({**(deployment.parameters or {}), **parameters}, schema, full)
        if not deployment.work_pool_name:
            raise InputError(f"{full} has no work pool: deploy it again from prefect.yaml")

    started = time.monotonic()
    flow_run = run_deployment(
        deployment.id,
        parameters=parameters,
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
        result=_result_of(flow_run) if wait and state and state.is_completed() else None,
    )
