"""``tiefvision serve`` as its own process, on loopback, under abuse (issue 28): a flood of
concurrent large uploads (item 5) and clients that send a request slowly (item 7 iii).

Before: 50 concurrent uploads of a 25 MP JPEG took the server from 1.1 to 8.5 GB (7.8 GB
20 s later) and ``/api/health`` 16 s to answer (``bench/serve_flood.py``, which this test
runs scaled down). Now a few work at once, a few wait, the rest get 503 + Retry-After at
once; the uploads are decoded at the size the search needs; health answers throughout.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.serve_flood import Watch, photo_jpeg, rss_mib, upload
from tests.processes import serving

pytestmark = pytest.mark.slow

WORKERS = 2  # at work at once; as many again may wait
UPLOADS = 24
READ_TIMEOUT = 1.0


def _serve(store_url: str, folder: Path, **env: str) -> Iterator[tuple[str, int]]:
    """``tiefvision serve`` in its own process; yields (base URL, pid)."""
    settings = {
        "TIEFVISION_DATABASE_URL": f"sqlite:///{folder / 'annotations.sqlite'}",
        "TIEFVISION_DEVICE": "cpu",
        **env,
    }
    with serving(["--store", store_url], {**os.environ, **settings}, folder / "serve.log") as s:
        yield s


@pytest.fixture(scope="module")
def flood_server(indexed_catalog, tmp_path_factory) -> Iterator[tuple[str, int]]:
    folder = tmp_path_factory.mktemp("serve-flood")
    yield from _serve(indexed_catalog.store_url, folder, TIEFVISION_WORKERS=str(WORKERS))


@pytest.fixture(scope="module")
def slow_server(indexed_catalog, tmp_path_factory) -> Iterator[tuple[str, int]]:
    folder = tmp_path_factory.mktemp("serve-slow")
    yield from _serve(
        indexed_catalog.store_url, folder, TIEFVISION_REQUEST_READ_TIMEOUT=str(READ_TIMEOUT)
    )


def test_a_flood_of_large_uploads_is_bounded_and_health_keeps_answering(flood_server) -> None:
    base, pid = flood_server
    photo = photo_jpeg(25)  # 6124×4083, ~2 MB: a camera's
    warm = upload(f"{base}/api/search?k=3", photo)  # loads torch and the encoder
    assert warm[0] == 200, warm
    time.sleep(0.5)
    before = rss_mib(pid)
    watch = Watch(base, pid)
    results: list[tuple[int, str | None, float]] = []
    barrier = threading.Barrier(UPLOADS)

    def one() -> None:
        barrier.wait()
        results.append(upload(f"{base}/api/search?k=3", photo, timeout=120))

    started = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(UPLOADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flood_s = time.monotonic() - started
    time.sleep(0.3)  # one more health answer after the last upload
    watch.stop()
    peak = rss_mib(pid, "VmHWM")

    codes = Counter(code for code, _, _ in results)
    assert set(codes) <= {200, 503}, codes  # nothing dropped, nothing failed
    assert codes[200] >= WORKERS and codes[503] >= UPLOADS - 4 * WORKERS, codes
    assert all(retry == "2" for code, retry, _ in results if code == 503)
    refused = [seconds for code, _, seconds in results if code == 503]
    assert max(refused) < 5, refused  # refused at once, not after a wait in a queue
    assert flood_s < 60
    assert len(watch.health) >= 3 and max(watch.health) < 2.0, watch.health
    assert peak - before < 400, (before, peak)  # MiB; 50 uploads took +7.4 GB before
    deadline = time.monotonic() + 15
    while rss_mib(pid) > before + 100 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert rss_mib(pid) <= before + 100, (before, rss_mib(pid))  # and it is given back


def _send_slowly(base: str, parts: list[bytes], gap: float) -> tuple[bytes, float]:
    """Send ``parts`` ``gap`` seconds apart; what the server answered and when it closed."""
    host, port = base.removeprefix("http://").split(":")
    started = time.monotonic()
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            for part in parts:
                sock.sendall(part)
                time.sleep(gap)
        except OSError:
            pass  # closed by the server while we were still sending: what is tested
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except OSError:
            pass
    return answer, time.monotonic() - started


def test_a_client_sending_its_headers_slowly_is_cut_off(slow_server) -> None:
    base, _ = slow_server
    parts = [b"GET /api/health HTTP/1.1\r\nHost: x\r\n"] + [b"X-Slow: 1\r\n"] * 40
    answer, seconds = _send_slowly(base, parts, 0.2)  # would take 8 s
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert READ_TIMEOUT <= seconds < READ_TIMEOUT + 2


def test_a_client_sending_its_body_slowly_is_cut_off(slow_server) -> None:
    base, _ = slow_server
    head = (
        b"POST /api/triplets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    answer, seconds = _send_slowly(base, [head] + [b" "] * 40, 0.2)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert READ_TIMEOUT <= seconds < READ_TIMEOUT + 2


def test_an_idle_connection_is_closed_and_a_prompt_request_is_answered(slow_server) -> None:
    base, _ = slow_server
    answer, seconds = _send_slowly(base, [], 0)
    assert answer == b"" and seconds < READ_TIMEOUT + 2
    with urllib.request.urlopen(f"{base}/api/health", timeout=5) as prompt:
        assert prompt.status == 200
