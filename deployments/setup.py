"""Work pools and flow-result storage on the configured Prefect server (``tiefvision
setup-prefect``).

Why here and not in the CLI: this is Prefect-client code (blocks, work pools) that goes with
``prefect.yaml``'s deployments, whose pools it creates; the CLI keeps only the command and
its printing. Job templates themselves are pure logic in :mod:`tiefvision_core.deployments`.
"""

from __future__ import annotations

from typing import Any

from deployments.client import server
from tiefvision_core.deployments import cpu_pool_template, gpu_pool_template
from tiefvision_core.errors import ConfigError

__all__ = [
    "CPU_POOL",
    "CREDENTIALS_BLOCK",
    "GPU_POOL",
    "GPU_POOL_TYPES",
    "RESULTS_BLOCK",
    "setup_prefect",
]

CPU_POOL = "tiefvision-cpu"
GPU_POOL = "tiefvision-gpu"
CREDENTIALS_BLOCK = "tiefvision-s3"
RESULTS_BLOCK = "tiefvision-results"
#: The pools' default run environment: flow results go to the S3 bucket block.
RESULT_ENV = {"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": f"s3-bucket/{RESULTS_BLOCK}"}


def _save_result_storage(bucket: str, folder: str, endpoint: str | None) -> str:
    """The ``S3Bucket`` block (with its ``AwsCredentials``) results are written to."""
    from prefect_aws import AwsCredentials, S3Bucket
    from prefect_aws.client_parameters import AwsClientParameters

    from tiefvision_core.config import load_settings
    from tiefvision_core.storage.urls import open_store

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
    with server() as client:
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
