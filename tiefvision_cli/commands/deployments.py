"""The commands that talk to a Prefect server at ``$PREFECT_API_URL``: ``setup-prefect``
(result storage and work pools) and ``trigger`` (a deployment run, executed by a worker)."""

from __future__ import annotations

from typing import Annotated

import typer

from tiefvision_cli.commands import console, err_console, print_json
from tiefvision_cli.options import JsonRunOption, StoreOption
from tiefvision_core.errors import ConfigError

__all__ = ["setup_prefect", "trigger"]


def setup_prefect(
    bucket: Annotated[
        str | None,
        typer.Option(help="S3 bucket for flow results (default: the bucket of an s3:// store)."),
    ] = None,
    folder: Annotated[str, typer.Option(help="Prefix of flow results in the bucket.")] = (
        "prefect-results"
    ),
    endpoint: Annotated[
        str | None,
        typer.Option(help="S3 endpoint, e.g. MinIO (default: $TIEFVISION_S3_ENDPOINT_URL)."),
    ] = None,
    gpu_pool_type: Annotated[
        str,
        typer.Option(
            help="kubernetes (one job with a GPU per flow run) or process (a worker that "
            "runs on a GPU host)."
        ),
    ] = "kubernetes",
    gpu_image: Annotated[
        str, typer.Option(help="Image of the GPU pool's Kubernetes jobs.")
    ] = "tiefvision:gpu",
    namespace: Annotated[str, typer.Option(help="Namespace of those jobs.")] = "tiefvision",
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was done as JSON.")] = False,
) -> None:
    """Create or update flow-result storage and the work pools on a Prefect server.

    The server is the one at $PREFECT_API_URL; flow results go to an S3 bucket (an S3
    block). Idempotent: running it again changes nothing that is already set up.
    """
    import deployments.setup

    if bucket is None:
        from tiefvision_core.config import load_settings

        store_url = load_settings(store_url=store).store_url
        if not store_url.startswith("s3://"):
            raise ConfigError(
                "flow results go to S3: give --bucket BUCKET, or use an s3:// store "
                "(TIEFVISION_STORE_URL=s3://BUCKET/PREFIX)"
            )
        bucket = store_url.removeprefix("s3://").split("/", 1)[0]
    done = deployments.setup.setup_prefect(
        bucket=bucket,
        folder=folder,
        endpoint=endpoint,
        gpu_pool_type=gpu_pool_type,
        gpu_image=gpu_image,
        namespace=namespace,
    )
    if as_json:
        print_json(done)
        return
    from tiefvision_cli.report import print_setup_prefect

    print_setup_prefect(console, done)


def trigger(
    deployment: Annotated[
        str,
        typer.Argument(
            metavar="FLOW",
            help="Deployment: FLOW/NAME (reindex/nightly), or a flow with one deployment.",
        ),
    ],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="NAME=VALUE, repeatable; VALUE is read as JSON when it parses, else as text.",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the run to finish; exit 1 unless Completed.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="With --wait: stop waiting after SECONDS.")
    ] = None,
    as_json: JsonRunOption = False,
) -> None:
    """Run a deployment on the Prefect server at $PREFECT_API_URL (a worker executes it)."""
    from tiefvision_cli import orchestration

    run = orchestration.trigger(deployment, param or [], wait=wait, timeout=timeout)
    failed = wait and run.state != "COMPLETED"
    if as_json:
        print_json(run.as_dict())
    else:
        from tiefvision_cli.report import print_triggered

        print_triggered(err_console if failed else console, run, waited=wait, failed=failed)
    if failed:
        raise typer.Exit(1)
