"""Ingest throughput: the Prefect ingest flow against a plain single-process loop.

Both do the same work per image — read the bytes, sha256 them, fully decode them
(:func:`inspect_image`) — on the same files. The flow additionally writes staged and final
Parquet and runs under Prefect; the target is flow ≥ 1.3× the loop on a 2-core machine.

    python bench/ingest.py [--products 500 --views 4] [--repeat 3]

The Prefect temporary server is started by a warm-up run before timing, since a deployed
flow talks to a server that is already up.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def plain_loop(root: Path) -> int:
    """The baseline: one process, one file after another."""
    from tiefvision_core.catalog.imaging import inspect_image
    from tiefvision_core.config import load_settings

    count, max_pixels = 0, load_settings().max_image_pixels
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        inspect_image(data, max_pixels=max_pixels)
        count += 1
    return count


def flow_run(root: Path, store: Path) -> int:
    from flows.ingest import ingest

    summary = ingest(images=str(root), store=store.as_uri())
    return summary.images + summary.rejects_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=500)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--size", default="960x1200", help="WxH of the photos (catalog photos are ~1000 px)"
    )
    parser.add_argument("--cache", type=Path, default=Path("bench/results/catalog"))
    args = parser.parse_args()

    from tiefvision_core.catalog.synthetic import generate_catalog

    width, height = (int(v) for v in args.size.lower().split("x"))
    catalog = args.cache / f"{args.products}x{args.views}-{width}x{height}"
    images = catalog / "images"
    if not images.is_dir():
        print(f"generating {args.products * args.views} synthetic images in {catalog} …")
        generate_catalog(
            catalog, products=args.products, views=args.views, seed=0, size=(width, height)
        )
    total = sum(1 for p in images.rglob("*") if p.is_file())
    mbytes = sum(p.stat().st_size for p in images.rglob("*") if p.is_file()) / 2**20

    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm"
        (warm / "src").mkdir(parents=True)
        started = time.perf_counter()
        flow_run(warm / "src", warm / "store")
        warmup_s = time.perf_counter() - started
        print(f"prefect warm-up (temporary server start, excluded): {warmup_s:.1f}s")

        loop_times, flow_times = [], []
        for i in range(args.repeat):
            started = time.perf_counter()
            assert plain_loop(images) == total
            loop_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert flow_run(images, Path(tmp) / f"store-{i}") == total
            flow_times.append(time.perf_counter() - started)

    loop_s, flow_s = statistics.median(loop_times), statistics.median(flow_times)
    print(
        f"catalog: {total} images, {mbytes:.1f} MB, {os.cpu_count()} cores, median of {args.repeat}"
    )
    print(f"plain loop (baseline): {total / loop_s:8.1f} images/s  ({loop_s:.2f}s)")
    print(f"ingest flow          : {total / flow_s:8.1f} images/s  ({flow_s:.2f}s)")
    print(f"ratio flow/loop      : {loop_s / flow_s:8.2f}x   (target >= 1.30x)")


if __name__ == "__main__":
    main()
