"""A flood of concurrent photo uploads against ``tiefvision serve`` (issue 28, item 5).

    python bench/serve_flood.py [--uploads 50] [--megapixels 25] [--settle 20]
                                [--tree DIR ...] [--workers N]

It makes a small store (``bench/serve_memory.make_store``: a manifest and an index of random
vectors on the real efficientnet_lite0 grid, no CNN), starts ``tiefvision serve`` over it as
its own process, warms it up with one upload (torch and the encoder load on the first), then
sends ``--uploads`` searches by photo at once, each on its own connection, of one JPEG of
``--megapixels`` (a smooth photo-like picture, a few MB). Meanwhile it asks ``/api/health``
every 0.1 s and reads the server's ``VmRSS`` every 0.05 s. It prints one JSON line per tree:

* ``answers``: how many uploads got each status (200, 503, …), whether every 503 carried
  ``Retry-After``, and the slowest answer;
* ``health_max_s`` / ``health_p99_s``: the slowest and 99th-percentile health answer during
  the flood (a health request that got no answer within 60 s counts as 60 s);
* ``rss_mib``: before the flood, its peak (VmHWM), and ``--settle`` seconds after it.

``--tree DIR`` runs the server from another checkout (``git archive HEAD | tar -x -C DIR``),
repeatable: before/after on the same store and photo.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.serve_memory import make_store  # noqa: E402
from tests.s3_server import free_port  # noqa: E402


def photo_jpeg(megapixels: float, seed: int = 3) -> bytes:
    """A smooth, photo-like JPEG of about ``megapixels`` (3:2), a few MB as a camera's."""
    from PIL import Image

    width = round((megapixels * 1e6 * 1.5) ** 0.5)
    height = round(width / 1.5)
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (48, 72, 3), dtype=np.uint8))
    picture = small.resize((width, height), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), boundary


def upload(url: str, data: bytes, timeout: float = 300) -> tuple[int, str | None, float]:
    """Status, ``Retry-After`` and seconds of one search by photo."""
    body, boundary = _multipart(data)
    request = urllib.request.Request(
        url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
            return answer.status, None, time.perf_counter() - started
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, error.headers.get("Retry-After"), time.perf_counter() - started
    except OSError as error:
        print(f"upload failed: {error!r}", file=sys.stderr)
        return 0, None, time.perf_counter() - started  # reset or timed out


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Watch:
    """Health latency and server RSS, sampled in background threads until :meth:`stop`."""

    def __init__(self, base: str, pid: int) -> None:
        self.base, self.pid = base, pid
        self.health: list[float] = []
        self.rss: list[float] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._health, daemon=True),
            threading.Thread(target=self._memory, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _health(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(f"{self.base}/api/health", timeout=60) as answer:
                    answer.read()
                self.health.append(time.perf_counter() - started)
            except OSError:
                self.health.append(60.0)
            self._stop.wait(0.1)

    def _memory(self) -> None:
        while not self._stop.is_set():
            self.rss.append(rss_mib(self.pid))
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def start_server(store: Path, tree: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "tiefvision_cli.main", "serve", "--store", store.as_uri(),
         "--port", str(port)],
        env={**os.environ, "PYTHONPATH": str(tree), **env},
        cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    started = time.perf_counter()
    while True:
        if process.poll() is not None or time.perf_counter() - started > 300:
            raise SystemExit("tiefvision serve did not answer /api/health")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5):
                return process
        except OSError:
            time.sleep(0.05)


def flood(store: Path, tree: Path, photo: bytes, uploads: int, settle: float, env: dict) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(store, tree, port, env)
    try:
        warm = upload(f"{base}/api/search?k=5", photo)
        assert warm[0] == 200, warm
        time.sleep(1)
        before = rss_mib(process.pid)
        watch = Watch(base, process.pid)
        results: list[tuple[int, str | None, float]] = []
        barrier = threading.Barrier(uploads)

        def one() -> None:
            barrier.wait()
            results.append(upload(f"{base}/api/search?k=5", photo))

        started = time.perf_counter()
        threads = [threading.Thread(target=one) for _ in range(uploads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        flood_s = time.perf_counter() - started
        watch.stop()
        peak = rss_mib(process.pid, "VmHWM")
        time.sleep(settle)
        after = rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    codes = Counter(code for code, _, _ in results)
    refused = [retry for code, retry, _ in results if code == 503]
    health = sorted(watch.health)
    return {
        "tree": str(tree),
        "uploads": uploads,
        "photo_mb": round(len(photo) / 1e6, 2),
        "answers": {str(code): count for code, count in sorted(codes.items())},
        "every_503_has_retry_after": all(refused),
        "slowest_answer_s": round(max(s for _, _, s in results), 2),
        "flood_s": round(flood_s, 2),
        "health_checks": len(health),
        "health_max_s": round(health[-1], 2),
        "health_p99_s": round(health[int(0.99 * (len(health) - 1))], 2),
        "rss_mib": {
            "before": round(before),
            "peak": round(peak),
            "sampled_max": round(max(watch.rss)),
            f"after_{settle:g}s": round(after),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--megapixels", type=float, default=25)
    parser.add_argument("--settle", type=float, default=20)
    parser.add_argument("--workers", type=int, default=None, help="TIEFVISION_WORKERS")
    parser.add_argument("--tree", type=Path, action="append", default=None)
    args = parser.parse_args()
    env = {"TIEFVISION_WORKERS": str(args.workers)} if args.workers else {}
    with tempfile.TemporaryDirectory(prefix="tv-serve-flood-") as root:
        store = Path(root) / "store"
        make_store(store, 500, 40)
        photo = photo_jpeg(args.megapixels)
        for tree in args.tree or [ROOT]:
            row = flood(store, tree, photo, args.uploads, args.settle, env)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
