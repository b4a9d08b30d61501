"""The encode flow under a real Prefect server, on both storage backends, and killed midway."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import harness_api_url
from tests.processes import killed_alone_once_its_workers_run, left_running
from tiefvision_core.catalog.ingest import ingest_catalog
from tiefvision_core.catalog.synthetic import generate_catalog
from tiefvision_core.encoding.shards import read_encodings, vectors_as_maps
from tiefvision_core.storage.stores import LocalStore
from tiefvision_core.storage.urls import open_store

pytestmark = pytest.mark.usefixtures("prefect_harness")

ENCODER = "efficientnet_lite0"


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("catalog")
    generate_catalog(root, products=6, views=2, seed=4)
    return root


def _ingest(catalog_dir: Path, store_url: str) -> None:
    ingest_catalog(LocalStore(catalog_dir / "images", create=False), open_store(store_url))


def test_encode_flow_writes_shards_summary_and_resumes(catalog_dir, store_url) -> None:
    from prefect.client.orchestration import get_client

    from flows.encode import encode

    _ingest(catalog_dir, store_url)
    summary = encode(store=store_url, shard_size=5, batch_size=4)
    assert (summary.encoded, summary.rejected, summary.shards_written) == (12, 0, 3)
    assert summary.images_per_s > 0
    store = open_store(store_url)
    table = read_encodings(store, ENCODER, summary.encoder_version)
    assert table.num_rows == 12 and len(set(table["image_id"].to_pylist())) == 12
    assert {tuple(box) for box in table["box"].to_pylist()} == {(0, 0, 320, 400)}

    again = encode(store=store_url, shard_size=5, batch_size=4)
    assert (again.encoded, again.already_encoded, again.shards_written) == (0, 12, 0)

    import asyncio

    async def artifact_keys() -> set[str]:
        async with get_client() as client:
            return {a.key for a in await client.read_artifacts() if a.key}

    assert {"encode-summary", "encode-progress"} <= asyncio.run(artifact_keys())


def test_vanished_and_changed_images_become_rejects(catalog_dir, tmp_path) -> None:
    from flows.encode import encode

    images = tmp_path / "images"
    shutil.copytree(catalog_dir / "images", images)
    store_url = (tmp_path / "store").as_uri()
    ingest_catalog(LocalStore(images, create=False), open_store(store_url))
    files = sorted(images.rglob("*.jpg"))
    files[0].unlink()
    files[1].write_bytes(files[2].read_bytes())
    summary = encode(store=store_url, shard_size=50, batch_size=4)
    assert summary.encoded == 10 and summary.rejected == 2
    assert summary.reject_reasons == {"vanished": 1, "changed_since_ingest": 1}


def _encode_cli(store_url: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tiefvision_cli.main",
            "encode",
            "--store",
            store_url,
            "--shard-size",
            "3",
            "--batch-size",
            "1",
            "--json",
        ],
        env={**env, "PREFECT_API_URL": harness_api_url()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill takes its workers too
    )


@pytest.mark.slow
def test_killed_run_resumes_without_duplicates(catalog_dir, tmp_path) -> None:
    """SIGKILL once the first shard is on disk; the rerun equals an uninterrupted run."""
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    killed_url, clean_url = (tmp_path / "killed").as_uri(), (tmp_path / "clean").as_uri()
    for url in (killed_url, clean_url):
        _ingest(catalog_dir, url)
    prefix = tmp_path / "killed" / "encodings"

    run = _encode_cli(killed_url, env)
    deadline = time.monotonic() + 300
    while not list(prefix.rglob("shard-*.parquet")):
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no shard written in time"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    written = len(list(prefix.rglob("shard-*.parquet")))
    assert 1 <= written < 4, "the kill came too late to test resuming"
    assert not list(prefix.rglob(".tmp-*")), "a killed run must leave no partial file"

    for url in (killed_url, clean_url):
        finished = _encode_cli(url, env)
        _, err = finished.communicate(timeout=600)
        assert finished.returncode == 0, err.decode()[-2000:]

    tables = {}
    for name, url in (("killed", killed_url), ("clean", clean_url)):
        store = open_store(url)
        version = next(p for p in (tmp_path / name / "encodings" / ENCODER / "grid").iterdir())
        tables[name] = read_encodings(store, ENCODER, version.name)
    killed, clean = tables["killed"], tables["clean"]
    assert killed["image_id"].to_pylist() == clean["image_id"].to_pylist()
    assert len(set(killed["image_id"].to_pylist())) == killed.num_rows == 12
    np.testing.assert_array_equal(vectors_as_maps(killed), vectors_as_maps(clean))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.parametrize("workers", ["2", "1"], ids=["encoding-processes", "dataloader-workers"])
def test_a_killed_command_leaves_no_process_behind(catalog_dir, tmp_path, workers) -> None:
    """SIGKILL the command alone, not its group (as the OOM killer or ``kill -9 PID`` do),
    while its workers exist: its fork server, their workers and multiprocessing's resource
    tracker all end within seconds — before the command is even reaped, as its parent may
    never do. Two workers encode in their own processes; one decodes in a DataLoader worker
    while the command encodes. Before the fix all of them were still running 10 s later."""
    store_url = (tmp_path / "store").as_uri()
    _ingest(catalog_dir, store_url)
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING", "TIEFVISION_WORKERS": workers}
    with killed_alone_once_its_workers_run(_encode_cli(store_url, env)) as started:
        left = left_running(started, within=10)
        assert not left, [started[pid][:80] for pid in left]
