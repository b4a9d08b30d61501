"""Peak memory of ``tiefvision serve`` as the catalog grows (issue 14, item 5).

    python bench/serve_memory.py [--sizes 1000 10000 100000] [--searches 200] [--uploads 3]
                                 [--root DIR] [--keep]

For each N it makes a store cheaply — no CNN: a manifest of N ``ok`` photos written with
``catalog.publish_manifest`` (their bytes: a few small generated JPEGs referenced over and
over) and an index of N random unit vectors on the real similarity grid (3×3×1280 = 11,520
numbers, efficientnet_lite0) written with ``index_store.publish_index`` in the default kind
(``auto``: exact up to 64 MiB of float32, HNSW over the 576-number compact vectors beyond).
Then it starts ``tiefvision serve --store URL --port P`` as its own process, polls
``/api/health`` and reads ``/proc/PID/status`` (VmHWM, VmRSS and its anonymous / file-backed
parts: the memory-mapped ``vectors.npy`` shows as RssFile, page cache the kernel may drop)

* after start-up (first ``/api/health`` 200: nothing loaded yet, the service is lazy),
* after the first search by id (which loads the catalog and the index),
* after ``--searches`` searches by id of random catalog photos (p50 latency),
* after ``--uploads`` searches by uploaded photo (builds the encoder: torch + weights).

The index is built with the default configuration (HNSW: M=32, efConstruction=80), and
must pass its self-check, as a real build. ``--tree DIR`` runs the server
from another checkout (``git archive HEAD | tar -x -C DIR``): before/after on the same stores.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.s3_server import free_port  # noqa: E402
from tiefvision_core.vector_index.vectors import IndexConfig  # noqa: E402

GRID = (3, 3, 1280)  # efficientnet_lite0 on the 3×3 similarity grid
DIM = GRID[0] * GRID[1] * GRID[2]
PHOTOS = 8  # distinct JPEG files; photo i is file i % PHOTOS
LATENT = 16


def _jpegs(count: int) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(1)
    out = []
    for _ in range(count):
        pixels = rng.integers(0, 255, (96, 72, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).resize((240, 320)).save(buffer, "JPEG", quality=80)
        out.append(buffer.getvalue())
    return out


def make_store(folder: Path, n: int, ef_construction: int) -> dict[str, float]:
    """A local store with a manifest of ``n`` photos and an index of ``n`` random vectors."""
    import hashlib
    from datetime import UTC, datetime

    import pandas as pd

    from tiefvision_core.catalog.manifest import MANIFEST_COLUMNS, image_id_for, publish_manifest
    from tiefvision_core.storage.stores import LocalStore
    from tiefvision_core.vector_index.publish import publish_index

    started = time.perf_counter()
    store = LocalStore(folder)
    files = _jpegs(PHOTOS)
    shas = [hashlib.sha256(data).hexdigest() for data in files]
    for i, data in enumerate(files):
        store.put_bytes(f"photos/p{i}.jpg", data)
    now = datetime.now(UTC)
    paths = [f"shop/{i // 1000:03d}/photo-{i:06d}.jpg" for i in range(n)]
    ids = [image_id_for(p) for p in paths]
    frame = pd.DataFrame(
        {
            "image_id": ids,
            "rel_path": paths,
            "source_uri": [store.uri(f"photos/p{i % PHOTOS}.jpg") for i in range(n)],
            "sha256": [shas[i % PHOTOS] for i in range(n)],
            "bytes": [len(files[i % PHOTOS]) for i in range(n)],
            "version_tag": [f"{i}" for i in range(n)],
            "width": np.full(n, 240, np.int32),
            "height": np.full(n, 320, np.int32),
            "format": "JPEG",
            "mode": "RGB",
            "status": "ok",
            "change": "new",
            "reason": None,
            "detail": None,
            "ingested_at": now,
        }
    )[list(MANIFEST_COLUMNS)]
    frame["category"] = [("tops", "dresses", "shoes", "bags", "coats")[i % 5] for i in range(n)]
    publish_manifest(store, frame)
    manifest_s = time.perf_counter() - started

    scratch = folder / "scratch-vectors.npy"
    vectors = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float16, shape=(n, DIM))
    rng = np.random.default_rng(0)
    positions = GRID[0] * GRID[1]
    # Low intrinsic dimension, as real embeddings: a photo is LATENT numbers, each position
    # a fixed random map of them plus a little noise. (Pure noise in 11,520 dimensions is
    # no catalog: HNSW then misses some photos' own vectors and the build's self-check fails.)
    maps = rng.standard_normal((LATENT, positions * GRID[2]), np.float32)
    for start in range(0, n, 2048):
        count = min(2048, n - start)
        latent = rng.standard_normal((count, LATENT), np.float32)
        part = (latent @ maps).reshape(count, positions, GRID[2])
        part += 0.1 * np.sqrt(LATENT) * rng.standard_normal(part.shape, np.float32)
        part /= np.linalg.norm(part, axis=2, keepdims=True) * np.float32(np.sqrt(positions))
        vectors[start : start + len(part)] = part.reshape(len(part), -1)
    vectors.flush()
    id_frame = pd.DataFrame(
        {
            "image_id": ids,
            "sha256": frame["sha256"],
            "box": [[0, 0, 240, 320]] * n,
            "category": frame["category"],
        }
    )
    built = publish_index(
        store,
        "unsupervised",
        vectors,
        id_frame,
        grid=GRID,
        source={"encoder": "efficientnet_lite0", "bench": "serve_memory"},
        config=IndexConfig(hnsw_ef_construction=ef_construction),
    )
    del vectors
    scratch.unlink()
    return {
        "manifest_s": round(manifest_s, 1),
        "index_s": round(time.perf_counter() - started - manifest_s, 1),
        "kind": built.kind,
        "ids": ids,
    }


def memory(pid: int) -> dict[str, float]:
    """VmHWM, VmRSS, RssAnon, RssFile of ``pid`` in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return fields


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=120) as answer:
        return json.loads(answer.read())


def _upload(url: str, data: bytes) -> dict:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(request, timeout=300) as answer:
        return json.loads(answer.read())


def evict(folder: Path) -> None:
    """Drop the store's index files from the page cache: the server starts cold, as on a
    machine that did not build the index (and each run of a before/after pair alike)."""
    for path in (folder / "indexes").rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def measure(folder: Path, ids: list[str], searches: int, uploads: int, tree: Path) -> dict:
    evict(folder)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TIEFVISION_STORE_URL": folder.as_uri(), "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "tiefvision_cli.main", "serve", "--store", folder.as_uri(),
         "--port", str(port)],
        env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    out: dict = {}
    try:
        while True:
            if process.poll() is not None or time.perf_counter() - started > 300:
                raise SystemExit("tiefvision serve did not answer /api/health")
            try:
                _get(f"{base}/api/health")
                break
            except OSError:
                time.sleep(0.05)
        out["startup_s"] = round(time.perf_counter() - started, 2)
        out["after_startup"] = memory(process.pid)
        rng = np.random.default_rng(2)
        queries = [ids[i] for i in rng.integers(0, len(ids), searches + 1)]
        first = time.perf_counter()
        answer = _get(f"{base}/api/search?id={queries[0]}&k=10")
        assert answer["results"], answer
        out["first_search_s"] = round(time.perf_counter() - first, 2)
        out["after_first_search"] = memory(process.pid)
        times = []
        for image_id in queries[1:]:
            t = time.perf_counter()
            _get(f"{base}/api/search?id={image_id}&k=10")
            times.append(time.perf_counter() - t)
        out["by_id_p50_ms"] = round(float(np.median(times)) * 1000, 1)
        out["after_searches"] = memory(process.pid)
        if uploads:
            photos = _jpegs(uploads)
            t = time.perf_counter()
            for data in photos:
                assert _upload(f"{base}/api/search?k=10", data)["results"]
            out["uploads_s"] = round(time.perf_counter() - t, 1)
            out["after_uploads"] = memory(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--uploads", type=int, default=3)
    parser.add_argument("--ef-construction", type=int, default=IndexConfig().hnsw_ef_construction)
    parser.add_argument(
        "--tree",
        type=Path,
        action="append",
        default=None,
        help="run the server from this checkout (repeat: one row each)",
    )
    parser.add_argument("--root", type=Path, default=None, help="where the stores go")
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="tv-serve-memory-"))
    results = []
    for n in args.sizes:
        folder = root / f"store-{n}"
        if (folder / "indexes/unsupervised/CURRENT").exists():
            from tiefvision_core.catalog.manifest import read_manifest
            from tiefvision_core.storage.stores import LocalStore

            store = LocalStore(folder)
            version = store.read_pointer("indexes/unsupervised/CURRENT")
            meta = json.loads(store.get_bytes(f"indexes/unsupervised/{version}/metadata.json"))
            made = {"kind": meta["kind"], "ids": read_manifest(store)["image_id"].to_pylist()}
        else:
            made = make_store(folder, n, args.ef_construction)
        ids = made.pop("ids")
        for tree in args.tree or [ROOT]:
            row = {"n": n, "tree": str(tree), **made}
            row.update(measure(folder, ids, args.searches, args.uploads, tree))
            results.append(row)
            print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


def table(results: list[dict]) -> str:
    trees = list(dict.fromkeys(r["tree"] for r in results))
    lines = [
        "| tree | photos | kind | start-up s | first search s | by-id p50 ms "
        "| VmRSS after start-up MiB | VmRSS (RssAnon) after searches MiB "
        "| VmHWM after searches MiB | VmHWM after uploads MiB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        s = r["after_searches"]
        up = r.get("after_uploads", {}).get("VmHWM", "—")
        lines.append(
            f"| {Path(r['tree']).name} | {r['n']:,} | {r['kind']} | {r['startup_s']} | "
            f"{r['first_search_s']} | {r['by_id_p50_ms']} | {r['after_startup']['VmRSS']:.0f} | "
            f"{s['VmRSS']:.0f} ({s['RssAnon']:.0f}) | {s['VmHWM']:.0f} | {up} |"
        )
    for tree in trees:
        rows = [r for r in results if r["tree"] == tree]
        for a, b in itertools.pairwise(rows):
            per = (b["n"] - a["n"]) / (1024 * 1024)
            anon = b["after_searches"]["RssAnon"] - a["after_searches"]["RssAnon"]
            hwm = b["after_searches"]["VmHWM"] - a["after_searches"]["VmHWM"]
            lines.append(
                f"\n{Path(tree).name}: {a['n']:,} → {b['n']:,} photos: RssAnon "
                f"+{anon / per:,.0f} B/photo, VmHWM +{hwm / per:,.0f} B/photo (after searches)"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
