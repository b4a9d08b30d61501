"""infra/local/start.sh and stop.sh for real: the stack a user without Docker runs.

Runs the scripts as a user would (own state directory and free ports, so a stack the user
already runs is not disturbed), then talks to what they started exactly as the CLI does:
the Prefect API and the S3 store named by env.sh. Afterwards nothing may be left running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.infra.infra_files import INFRA
from tiefvision_core.config import Settings, load_settings
from tiefvision_core.storage.urls import open_store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SERVICES = ("s3", "prefect-server", "worker-cpu", "worker-gpu", "web")


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The scripts' environment: this interpreter's venv, a fresh state dir, free ports."""
    tmp_path = tmp_path_factory.mktemp("local-stack")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TIEFVISION_", "AWS_", "PREFECT_"))
    }
    return env | {
        "TIEFVISION_LOCAL_STATE": str(tmp_path / "state"),
        "TIEFVISION_LOCAL_S3_PORT": str(free_port()),
        "TIEFVISION_LOCAL_PREFECT_PORT": str(free_port()),
        "TIEFVISION_LOCAL_WEB_PORT": str(free_port()),
        "TIEFVISION_VENV": str(Path(sys.executable).parent.parent),
    }


@pytest.fixture(scope="module")
def running_stack(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """start.sh; yields env.sh's variables; stop.sh even when a test failed (once for the
    module: starting the stack takes a while)."""
    run_dir = Path(stack_env["TIEFVISION_LOCAL_STATE"]) / "run"
    local = INFRA / "local"
    try:
        started = subprocess.run(
            [local / "start.sh"], env=stack_env, capture_output=True, text=True, timeout=600
        )
        assert started.returncode == 0, started.stdout + started.stderr
        assert {pid.stem for pid in run_dir.glob("*.pid")} == set(SERVICES)
        sourced = subprocess.run(
            ["bash", "-c", f"source {local / 'env.sh'} && env -0"],
            env=stack_env,
            capture_output=True,
            text=True,
            check=True,
        )
        yield dict(item.split("=", 1) for item in sourced.stdout.split("\0") if "=" in item)
    finally:
        pgids = [int(pid.read_text()) for pid in run_dir.glob("*.pid")]
        stopped = subprocess.run(
            [local / "stop.sh"], env=stack_env, capture_output=True, text=True, timeout=300
        )
        left = [pgid for pgid in pgids if _alive(pgid)]
        for pgid in left:  # never leave a server behind, even when stop.sh is broken
            os.killpg(pgid, 9)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not left, f"stop.sh left process groups {left} running"
    assert not list(run_dir.glob("*.pid"))


def _stack_settings(stack: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a shell that sourced env.sh has: its TIEFVISION_* and AWS_* only."""
    for name in os.environ:
        if name.startswith(("TIEFVISION_", "AWS_")):
            monkeypatch.delenv(name)
    for name, value in stack.items():
        if name.startswith(("TIEFVISION_", "AWS_")):
            monkeypatch.setenv(name, value)
    return load_settings()


def test_local_stack_serves_prefect_and_s3(running_stack, monkeypatch) -> None:
    api = running_stack["PREFECT_API_URL"]
    with urllib.request.urlopen(f"{api}/health", timeout=10) as response:
        assert json.load(response) is True
    settings = _stack_settings(running_stack, monkeypatch)
    assert settings.store_url == "s3://tiefvision/store"
    store = open_store(settings.store_url, settings)
    store.put_bytes("infra-test/hello.txt", b"hello from the local stack")
    assert store.get_bytes("infra-test/hello.txt") == b"hello from the local stack"
    assert "infra-test/hello.txt" in {info.key for info in store.list("infra-test/")}


def test_local_stack_serves_the_web_service_on_its_store_and_prefect(
    running_stack, monkeypatch
) -> None:
    """`tiefvision serve` from start.sh: same store (env.sh's S3) and Prefect server."""
    from tiefvision_core.storage.layout import LOCATOR_CURRENT

    web = f"http://127.0.0.1:{running_stack['TIEFVISION_LOCAL_WEB_PORT']}"
    with urllib.request.urlopen(f"{web}/api/health", timeout=10) as response:
        assert json.load(response)["status"] == "ok"
    # The same store: a pointer written through env.sh's settings is what the service reads
    # (its address is shown to token holders only, and this development server has none).
    settings = _stack_settings(running_stack, monkeypatch)
    store = open_store(settings.store_url, settings)
    store.publish_pointer(LOCATOR_CURRENT, "infra-test-locator")
    try:
        with urllib.request.urlopen(f"{web}/api/status", timeout=30) as response:
            status = json.load(response)
    finally:
        store.delete(LOCATOR_CURRENT)
    assert "store" not in status
    assert status["models"]["locator"] == "infra-test-locator"
    assert status["prefect"]["configured"] is True and "error" not in status["prefect"]
    assert status["writes_need_token"] is False  # loopback, development mode
