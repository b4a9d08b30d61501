"""Web API under load: search by id and by upload over HTTP, against the core calls in-process.

    python bench/api.py [--images 10000] [--clients 8] [--seconds 20] [--uploads 48]
                        [--kind auto|exact|hnsw] [--workdir bench/results/api]

Set-up (reused when ``--workdir`` already holds it for the same ``--images`` and ``--kind``):
a store with a real catalog of 24 synthetic photos, a manifest of ``--images`` rows (the 24
photos' rows repeated under new ids, so every id is a real, servable catalog image) and an
unsupervised index of ``--images`` vectors shaped like the default space (3×3×1280 = 11,520
numbers, generated as in ``bench/search.py``) recorded as EfficientNet-Lite0 vectors, so
uploads are encoded and searched like real ones.

Measured in one run, same index, same ids:

* **baseline** — ``search_by_id`` / ``search_by_image`` called in this process, one at a
  time (no HTTP, no JSON, no threads);
* **API** — ``tiefvision serve`` in a second process on loopback, driven by ``--clients``
  concurrent clients here (one keep-alive ``httpx.Client`` each): ``GET /api/search?id=``
  for ``--seconds``, then ``POST /api/search`` with the photos, ``--uploads`` in all.

Reports p50/p99 latency, requests/s and errors per path, and the ratios API / baseline.
Targets (issue 7): search-by-id p50 < 30 ms, no errors, under 8 concurrent clients.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

# As `tiefvision serve` does for its process (see there): single-threaded OpenBLAS, so the
# in-process baseline runs the core calls under the same conditions as the server.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GRID = (3, 3, 1280)
PHOTOS = (8, 3)  # products × views of the real catalog


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_store(workdir: Path, images: int, kind: str, encoder) -> str:
    """The catalog, manifest and index described in the module docstring (reused)."""
    import pandas as pd

    from bench.search import Synthetic, VectorGenerator
    from tiefvision_core.catalog.ingest import ingest_catalog
    from tiefvision_core.catalog.manifest import publish_manifest, read_manifest
    from tiefvision_core.catalog.synthetic import generate_catalog
    from tiefvision_core.index.spaces import space_source
    from tiefvision_core.storage.stores import LocalStore
    from tiefvision_core.vector_index.publish import publish_index
    from tiefvision_core.vector_index.vectors import IndexConfig

    store_dir = workdir / "store"
    marker = workdir / "built.json"
    wanted = {"images": images, "kind": kind, "grid": list(GRID), "encoder": encoder.version}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        print(f"reusing {store_dir}")
        return store_dir.as_uri()
    started = time.perf_counter()
    generate_catalog(workdir / "catalog", products=PHOTOS[0], views=PHOTOS[1], seed=3)
    store = LocalStore(store_dir)
    ingest_catalog(LocalStore(workdir / "catalog" / "images", create=False), store)
    real = read_manifest(store).to_pandas()
    real = real[real["status"] == "ok"].reset_index(drop=True)
    frame = real.iloc[np.arange(images) % len(real)].reset_index(drop=True)
    frame["image_id"] = [f"bench-{n:06d}" for n in range(images)]
    frame["rel_path"] = [f"bench/{n:06d}.jpg" for n in range(images)]
    publish_manifest(store, frame)

    generator = VectorGenerator(Synthetic(grid=GRID, clusters=max(10, images // 100), seed=1))
    vectors = np.empty((images, int(np.prod(GRID))), np.float16)
    for start in range(0, images, 1000):
        count = min(1000, images - start)
        vectors[start : start + count] = generator.make(count, seed=start)[0]
    ids = pd.DataFrame(
        {
            "image_id": frame["image_id"],
            "sha256": frame["sha256"],
            "box": [
                [0, 0, int(w), int(h)] for w, h in zip(frame["width"], frame["height"], strict=True)
            ],
        }
    )
    version = publish_index(
        store,
        "unsupervised",
        vectors,
        ids,
        grid=GRID,
        source=space_source(store, encoder, "unsupervised"),
        config=IndexConfig(kind=kind),
    )
    marker.write_text(json.dumps(wanted))
    print(
        f"built {store_dir}: {images:,} images, index {version.kind} {version.version} "
        f"in {time.perf_counter() - started:.0f} s"
    )
    return store_dir.as_uri()


def _stats(latencies_s: list[float], seconds: float, errors: int) -> dict[str, float]:
    ms = np.array(latencies_s) * 1000 if latencies_s else np.array([np.nan])
    return {
        "requests": len(latencies_s),
        "errors": errors,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "rps": round(len(latencies_s) / seconds, 1) if seconds else 0.0,
    }


def baseline(store_url: str, encoder, ids: list[str], photos: list[bytes]) -> dict[str, dict]:
    """The core calls, in this process, one at a time."""
    from tiefvision_core.config import load_settings
    from tiefvision_core.index.search import search_by_id, search_by_image
    from tiefvision_core.storage.urls import open_store
    from tiefvision_core.vector_index.versions import open_index

    store = open_store(store_url)
    max_pixels = load_settings().max_image_pixels
    opened = open_index(store, "unsupervised")
    for image_id in ids[:20]:  # warm the page cache and FAISS
        search_by_id(opened, image_id, k=10)
    times = []
    started = time.perf_counter()
    for image_id in ids:
        t = time.perf_counter()
        search_by_id(opened, image_id, k=10)
        times.append(time.perf_counter() - t)
    by_id = _stats(times, time.perf_counter() - started, 0)
    search_by_image(store, opened, encoder, photos[0], max_pixels=max_pixels, k=10)  # first forward
    times = []
    started = time.perf_counter()
    for data in photos:
        t = time.perf_counter()
        search_by_image(store, opened, encoder, data, max_pixels=max_pixels, k=10)
        times.append(time.perf_counter() - t)
    return {"by_id": by_id, "by_upload": _stats(times, time.perf_counter() - started, 0)}


def start_server(store_url: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = (workdir / "server.log").open("w")
    env = {**os.environ, "PREFECT_API_URL": ""}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tiefvision_cli.main",
            "serve",
            "--store",
            store_url,
            "--database",
            f"sqlite:///{workdir / 'annotations.sqlite'}",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    import httpx

    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: see {workdir / 'server.log'}")
        try:
            if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("server did not answer /api/health within 120 s")


def drive(base: str, clients: int, make_request, *, seconds=None, total=None) -> dict:
    """``clients`` threads with a keep-alive client each, for ``seconds`` or ``total``
    requests in all; ``make_request(client, n)`` returns the response."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(10**9))
    stop_at = time.monotonic() + seconds if seconds else None

    def worker() -> None:
        with httpx.Client(base_url=base, timeout=120) as client:
            while True:
                with lock:
                    n = next(counter)
                if (total is not None and n >= total) or (stop_at and time.monotonic() > stop_at):
                    return
                t = time.perf_counter()
                try:
                    response = make_request(client, n)
                    ok = response.status_code == 200
                    why = f"{response.status_code} {response.text[:120]}"
                except httpx.HTTPError as error:
                    ok, why = False, repr(error)
                elapsed = time.perf_counter() - t
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors.append(why)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = _stats(latencies, time.perf_counter() - started, len(errors))
    if errors:
        stats["first_errors"] = errors[:3]
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--uploads", type=int, default=48)
    parser.add_argument("--kind", default="auto", choices=["auto", "exact", "hnsw", "ivfpq"])
    parser.add_argument("--workdir", type=Path, default=Path("bench/results/api"))
    args = parser.parse_args()
    workdir = (args.workdir / f"{args.images}-{args.kind}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    from tiefvision_core.encoders import get_encoder

    encoder = get_encoder("efficientnet_lite0")
    store_url = build_store(workdir, args.images, args.kind, encoder)
    photos = [p.read_bytes() for p in sorted((workdir / "catalog" / "images").rglob("*.jpg"))]
    rng = random.Random(0)
    ids = [f"bench-{rng.randrange(args.images):06d}" for _ in range(2000)]

    base_line = baseline(store_url, encoder, ids[:500], photos[:12])
    print("baseline (core, in-process, sequential):", json.dumps(base_line))

    server, base = start_server(store_url, workdir)
    try:
        import httpx

        with httpx.Client(base_url=base, timeout=300) as warm:  # index, encoder, caches
            for image_id in ids[:20]:
                warm.get("/api/search", params={"id": image_id}).raise_for_status()
            files = {"image": ("warm.jpg", photos[0], "image/jpeg")}
            warm.post("/api/search", files=files).raise_for_status()
            kind = warm.get("/api/status").json()["indexes"]["unsupervised"]["kind"]

        by_id = drive(
            base,
            args.clients,
            lambda c, n: c.get("/api/search", params={"id": ids[n % len(ids)], "k": 10}),
            seconds=args.seconds,
        )
        by_upload = drive(
            base,
            args.clients,
            lambda c, n: c.post(
                "/api/search",
                params={"k": 10},
                files={"image": (f"q{n}.jpg", photos[n % len(photos)], "image/jpeg")},
            ),
            total=args.uploads,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)

    result = {
        "images": args.images,
        "index_kind": kind,
        "clients": args.clients,
        "cpus": os.cpu_count(),
        # What uvicorn's "auto" picks in the server (same environment as this process).
        "server_http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "server_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "baseline": base_line,
        "api": {"by_id": by_id, "by_upload": by_upload},
        "ratio_p50": {
            "by_id": round(by_id["p50_ms"] / base_line["by_id"]["p50_ms"], 2),
            "by_upload": round(by_upload["p50_ms"] / base_line["by_upload"]["p50_ms"], 2),
        },
        "targets": {
            "by_id_p50_under_30_ms": by_id["p50_ms"] < 30,
            "no_errors": by_id["errors"] == 0 and by_upload["errors"] == 0,
        },
    }
    print(json.dumps(result, indent=1))
    (workdir / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
