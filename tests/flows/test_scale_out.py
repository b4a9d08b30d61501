"""Scale-out: the encode flow on a two-worker local Dask cluster equals the default runner.

The switch is a setting (``TIEFVISION_TASK_RUNNER=dask``), not a code path of its own: the
same flow, tasks and core functions run, only on Dask workers — where the encoding runtime
must not nest its own process pool.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from flows import _scale_out
from tiefvision_core.catalog.ingest import ingest_catalog
from tiefvision_core.catalog.synthetic import generate_catalog
from tiefvision_core.config import load_settings
from tiefvision_core.encoding.shards import read_encodings, vectors_as_maps
from tiefvision_core.errors import ConfigError
from tiefvision_core.storage.stores import LocalStore
from tiefvision_core.storage.urls import open_store

ENCODER = "efficientnet_lite0"


@pytest.fixture(autouse=True)
def _default_runner_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TIEFVISION_TASK_RUNNER", "TIEFVISION_DASK_ADDRESS", "TIEFVISION_DASK_WORKERS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("catalog")
    generate_catalog(root, products=5, views=2, seed=11)
    return root


def _encode(catalog_dir: Path, store_url: str):
    from flows.encode import encode

    ingest_catalog(LocalStore(catalog_dir / "images", create=False), open_store(store_url))
    return encode(store=store_url, shard_size=4, batch_size=4, flips=True)


def _worker_state() -> tuple[int, int]:
    """Runs on every Dask worker: encoding runtimes it built, child processes it runs."""
    import multiprocessing

    from tasks.encoding import get_runtime

    return get_runtime.cache_info().currsize, len(multiprocessing.active_children())


@pytest.mark.usefixtures("prefect_harness")
def test_dask_cluster_encodes_exactly_like_the_default_runner(
    catalog_dir, tmp_path, monkeypatch
) -> None:
    from prefect_dask import DaskTaskRunner

    default = _encode(catalog_dir, (tmp_path / "default").as_uri())

    monkeypatch.setenv("TIEFVISION_TASK_RUNNER", "dask")
    monkeypatch.setenv("TIEFVISION_DASK_WORKERS", "2")
    seen: dict[str, object] = {}
    exit_runner = DaskTaskRunner.__exit__

    def inspect_then_exit(runner, *args):
        # Before the temporary cluster goes: which workers ran it, and what they built.
        seen["cluster_kwargs"] = runner.cluster_kwargs
        seen["workers"] = runner.client.run(_worker_state)
        return exit_runner(runner, *args)

    monkeypatch.setattr(DaskTaskRunner, "__exit__", inspect_then_exit)
    scaled = _encode(catalog_dir, (tmp_path / "dask").as_uri())

    assert seen["cluster_kwargs"]["workers"] == 2
    workers = seen["workers"]
    assert len(workers) == 2, workers
    assert sum(built for built, _ in workers.values()) >= 1, workers  # shards ran there ...
    assert all(children == 0 for _, children in workers.values()), workers  # ... unnested

    for summary in (default, scaled):
        assert (summary.encoded, summary.rejected, summary.shards_written) == (10, 0, 3)
    assert scaled.encoder_version == default.encoder_version

    tables = {
        name: read_encodings(open_store((tmp_path / name).as_uri()), ENCODER, version)
        for name, version in (
            ("default", default.encoder_version),
            ("dask", scaled.encoder_version),
        )
    }
    one, other = tables["default"], tables["dask"]
    assert Counter(one["image_id"].to_pylist()) == Counter(other["image_id"].to_pylist())
    assert set(Counter(one["image_id"].to_pylist()).values()) == {2}  # the crop and its mirror
    for column in ("image_id", "sha256", "flipped", "box"):
        assert one[column].to_pylist() == other[column].to_pylist(), column
    # Same model, same pixels; torch on 1 thread (worker) vs 2 (flow process) may round the
    # last float16 bit differently, nothing more.
    np.testing.assert_allclose(vectors_as_maps(other), vectors_as_maps(one), rtol=2e-3, atol=2e-3)


@pytest.mark.usefixtures("prefect_harness")
def test_a_bad_engine_setting_stops_the_flow_at_start(catalog_dir, tmp_path, monkeypatch) -> None:
    from flows.encode import encode

    store_url = (tmp_path / "store").as_uri()
    ingest_catalog(LocalStore(catalog_dir / "images", create=False), open_store(store_url))
    monkeypatch.setenv("TIEFVISION_TASK_RUNNER", "ray")
    with pytest.raises(
        ConfigError, match=r"TIEFVISION_TASK_RUNNER \(got 'ray'\).*'default' or 'dask'"
    ):
        encode(store=store_url, shard_size=4, batch_size=4)
    assert not (tmp_path / "store" / "encodings").exists()


def test_the_setting_picks_the_runner(monkeypatch) -> None:
    from prefect_dask import DaskTaskRunner

    default = _scale_out.task_runner_for(load_settings())
    assert isinstance(default, ThreadPoolTaskRunner) and default._max_workers == 1

    existing = _scale_out.task_runner_for(
        load_settings(task_runner="dask", dask_address="scheduler:8786")
    )
    assert isinstance(existing, DaskTaskRunner) and existing.address == "tcp://scheduler:8786"

    monkeypatch.setattr(_scale_out.torch.cuda, "device_count", lambda: 0)
    cpu = _scale_out.task_runner_for(load_settings(task_runner="dask", workers=4))
    assert cpu.cluster_kwargs == {"workers": 4, "threads": 1, "gpus": 0}
    fewer = _scale_out.task_runner_for(load_settings(task_runner="dask", workers=4, dask_workers=2))
    assert fewer.cluster_kwargs == {"workers": 2, "threads": 2, "gpus": 0}

    monkeypatch.setattr(_scale_out.torch.cuda, "device_count", lambda: 2)
    gpu = _scale_out.task_runner_for(load_settings(task_runner="dask", workers=16))
    assert gpu.cluster_kwargs == {"workers": 2, "threads": 8, "gpus": 2}
    forced_cpu = _scale_out.task_runner_for(
        load_settings(task_runner="dask", workers=16, device="cpu")
    )
    assert forced_cpu.cluster_kwargs["gpus"] == 0

    monkeypatch.setenv("TIEFVISION_TASK_RUNNER", "dask")
    assert isinstance(_scale_out.SettingsTaskRunner().duplicate(), DaskTaskRunner)
    monkeypatch.setenv("TIEFVISION_TASK_RUNNER", "default")
    assert isinstance(_scale_out.SettingsTaskRunner().duplicate(), ThreadPoolTaskRunner)
