"""Where a flow's shards run: in the flow's process (default) or on a Dask cluster.

Why a task runner chosen when each run starts: the encode and locate flows are called by
the CLI, by other flows (rebuild-index, train-triplets), by benchmarks and by deployments.
Reading ``TIEFVISION_TASK_RUNNER`` at the start of every run makes the switch work from all
of them without a code fork or a change at any call site, and an explicit
``flow.with_options(task_runner=...)`` still wins. The engine is prefect-dask's
``DaskTaskRunner``: no cluster code of our own, only the shape of the temporary local
cluster (see ``docs/scale-out.md``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, PrefectFutureList, as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from tasks.progress import advance
from tiefvision_core.config import Settings
from tiefvision_core.errors import ConfigError
from tiefvision_core.run import settings_for

__all__ = ["SettingsTaskRunner", "gather", "gpu_request", "local_cluster", "task_runner_for"]

log = logging.getLogger(__name__)


def task_runner_for(settings: Settings, *, max_workers: int = 1) -> TaskRunner:
    """The task runner ``settings`` ask for.

    ``default``: a thread pool of ``max_workers`` in the flow's process (one shard after
    another: each already fills the machine). ``dask``: the scheduler at
    ``dask_address``, else a temporary local cluster of ``dask_workers`` processes — one per
    GPU on a CUDA machine, else one single-shard worker per CPU worker, the cores shared out
    between them.
    """
    if settings.task_runner == "default":
        return ThreadPoolTaskRunner(max_workers=max_workers)
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    gpus = torch.cuda.device_count() if settings.device != "cpu" else 0
    workers = settings.dask_workers or gpus or settings.workers
    return DaskTaskRunner(
        # prefect-dask types it Callable[[], Cluster] but calls it with **cluster_kwargs
        cluster_class=local_cluster,  # type: ignore[arg-type]
        cluster_kwargs={
            "workers": workers,
            "threads": max(1, settings.workers // workers),
            "gpus": gpus,
        },
    )


class SettingsTaskRunner(TaskRunner[PrefectFuture[Any]]):
    """A flow's task runner that becomes :func:`task_runner_for` the settings at each run.

    Prefect enters ``flow.task_runner.duplicate()`` when a flow run starts; this one's
    duplicate is the runner the environment asks for. It never runs tasks itself. An invalid
    setting gives the default runner here, so that the flow's first step (which reads the
    same settings) fails with the message that names the setting.
    """

    def __init__(self, max_workers: int = 1) -> None:
        super().__init__()
        self.max_workers = max_workers

    @property
    def name(self) -> str:
        return "settings"

    def duplicate(self) -> TaskRunner:  # type: ignore[override]
        try:
            settings = settings_for()
        except ConfigError:
            return ThreadPoolTaskRunner(max_workers=self.max_workers)
        return task_runner_for(settings, max_workers=self.max_workers)

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("SettingsTaskRunner only chooses a runner: submit to its duplicate()")


def local_cluster(workers: int, threads: int, gpus: int) -> Any:
    """A temporary Dask cluster on this machine: ``workers`` worker processes on loopback.

    Each worker runs one shard at a time (``nthreads=1``; a shard already fills its share of
    the machine) with ``threads`` OpenMP/torch threads. With ``gpus``, worker *i* sees only
    GPU *i mod gpus*, offers the resource ``GPU=1`` (tasks that ask for a GPU wait for it),
    and is not daemonic so that its runtime may start decoding processes; CPU workers stay
    daemonic (Dask's default) and decode in their own thread, like each process of the
    default runner's pool.
    """
    import dask
    from distributed import Nanny, Scheduler, SpecCluster
    from distributed.system import MEMORY_LIMIT

    def worker(index: int) -> dict[str, Any]:
        env = {"OMP_NUM_THREADS": str(threads)}
        options: dict[str, Any] = {
            "nthreads": 1,
            "host": "127.0.0.1",
            "memory_limit": MEMORY_LIMIT // workers,
            "silence_logs": logging.WARNING,
            "env": env,
        }
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
            options["resources"] = {"GPU": 1}
        return {"cls": Nanny, "options": options}

    # A nanny writes Dask's pre-spawn variables (OMP_NUM_THREADS=1, …) into its own
    # process's environment: the flow's process must not keep them for what it starts later.
    before = dict(os.environ)
    try:
        with dask.config.set({"distributed.worker.daemon": not gpus}):
            return SpecCluster(
                workers={index: worker(index) for index in range(workers)},
                scheduler={
                    "cls": Scheduler,
                    "options": {
                        "host": "127.0.0.1",
                        "dashboard": False,
                        "dashboard_address": "127.0.0.1:0",  # its HTTP server: any free port
                    },
                },
                silence_logs=logging.WARNING,
                name="tiefvision-local",
            )
    finally:
        for name in set(os.environ) - set(before):
            del os.environ[name]
        for name, value in before.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


def _dask_runner() -> Any:
    """The current flow run's ``DaskTaskRunner``, or None (not a Dask run, or no flow)."""
    context = FlowRunContext.get()
    prefect_dask = sys.modules.get("prefect_dask")  # not imported: not a Dask run
    if context is None or prefect_dask is None:
        return None
    runner = context.task_runner
    return runner if isinstance(runner, prefect_dask.DaskTaskRunner) else None


def gpu_request() -> contextlib.AbstractContextManager[Any]:
    """Around a ``.map``/``.submit``: each task takes one ``GPU`` when the run's Dask
    cluster offers that resource.

    Why ask the cluster: a task asking for a resource no worker offers waits forever, so on
    CPU-only workers (or the default runner) nothing is requested. Workers of an existing
    cluster offer GPUs when started with ``--resources GPU=1``.
    """
    runner = _dask_runner()
    return _annotate_gpu(runner) if runner is not None else contextlib.nullcontext()


@contextlib.contextmanager
def _annotate_gpu(runner: Any) -> Iterator[None]:
    import dask

    workers = runner.client.scheduler_info(n_workers=-1).get("workers", {})
    if any("GPU" in (worker.get("resources") or {}) for worker in workers.values()):
        with dask.annotate(resources={"GPU": 1}):
            yield
    else:
        yield


def gather(
    futures: PrefectFutureList[Any], shards: Sequence[Any], progress_id: str | None, stage: str
) -> list[Any]:
    """The results of one mapped task per shard (``start``/``stop`` slices), in order.

    Why here: a task on a Dask worker cannot move the progress kept in the flow's process
    (the CLI's bar, the UI's artifact), so on Dask each shard's images count here when it
    finishes. The default runner's tasks count their own batches as they go.
    """
    if _dask_runner() is not None:
        shard_of = dict(zip(futures, shards, strict=True))
        for future in as_completed(list(futures)):
            shard = shard_of[future]
            advance(progress_id, stage, shard.stop - shard.start)
    return futures.result()
