"""Encoding throughput and memory: the encode flow against a naive loop and the model bound.

All three measured in the same run, on the same synthetic catalog photos (960×1200 JPEGs):

* **naive loop** — open each image with PIL, preprocess, forward one image at a time;
* **bound** — model forward alone on pre-decoded, pre-resized tensors, at the best batch
  size and memory format of a sweep (what the flow could reach if decoding were free);
* **flow** — the Prefect ``encode`` flow: planning, decoding and batched forward (on a
  multi-core CPU: one single-threaded process per core; on a GPU: DataLoader workers feeding
  the device), Parquet shards written atomically. The models are built and tuned by a
  warm-up run first (a nightly worker keeps them), so the timed run is planning + encoding
  + writing.

Memory of every encoding process (RSS each, PSS summed) is sampled while it runs; the
catalog is made of ``--images`` entries (symlinks repeat the generated photos under other
names, so every entry is a distinct image to encode).

    python bench/encode.py [--images 5000] [--naive 300] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _encoding_processes() -> list[int]:
    """This process and its descendants, except the Prefect server (its own service)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            cmdline = (stat.parent / "cmdline").read_bytes()
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if b"uvicorn" in cmdline:
            parents.pop(int(stat.parent.name))
    tree, frontier = [os.getpid()], [os.getpid()]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def _memory_mib(pid: int, field: str) -> float:
    """``Rss`` or ``Pss`` of one process (Pss shares common pages out: sums honestly)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _server_cpu_seconds() -> float:
    """CPU seconds used so far by this process's Prefect server child (ephemeral mode)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"uvicorn" in cmdline:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def naive_loop(files: list[Path], encoder) -> float:
    """PIL open → RGB → resize 224 → normalise → forward batch 1, NCHW. Returns images/s."""
    import numpy as np
    import torch
    from PIL import Image

    size = encoder.preprocessing.crop_size
    started = time.perf_counter()
    with torch.inference_mode():
        for path in files:
            image = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).unsqueeze(0)
            encoder.encode_maps(pixels)
    return len(files) / (time.perf_counter() - started)


def bound_sweep(runtime) -> list:
    """Forward alone on a pre-made batch for each batch size and layout."""
    sizes = [1, 2, 4, 8, 16, 32] if not runtime.cuda else [16, 32, 64, 128, 256]
    return [
        runtime._measure(size, layout, seconds=3.0) for size in sizes for layout in (False, True)
    ]


def build_catalog(source: Path, target: Path, count: int) -> None:
    """``count`` entries named copy-K/<product>/view-N.jpg, symlinked to the generated files."""
    files = sorted(p for p in source.rglob("*.jpg"))
    made = 0
    copy = 0
    while made < count:
        for path in files:
            if made == count:
                break
            link = target / f"copy-{copy}" / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
            made += 1
        copy += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="catalog entries for the flow")
    parser.add_argument("--naive", type=int, default=300, help="images for the naive loop")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--weights", default="default")
    parser.add_argument("--cache", type=Path, default=Path("bench/results/catalog"))
    args = parser.parse_args()

    import torch

    from flows.encode import encode
    from flows.ingest import ingest
    from tasks.encoding import get_runtime
    from tiefvision_core.catalog.synthetic import generate_catalog
    from tiefvision_core.encoding.runtime import RuntimeConfig

    generated = args.cache / "500x4-960x1200"
    if not (generated / "images").is_dir():
        print(f"generating 2000 synthetic 960×1200 photos in {generated} …")
        generate_catalog(generated, products=500, views=4, seed=0, size=(960, 1200))
    threads = os.cpu_count() or 1
    config = RuntimeConfig(
        encoder=args.encoder, weights=args.weights, device=args.device, threads=threads
    )
    runtime = get_runtime(config)
    print(
        f"encoder {runtime.encoder.version} on {runtime.device}, {threads} threads; "
        f"flow picked batch {runtime.batch_size}, "
        f"{'channels_last' if runtime.channels_last else 'NCHW'}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm = tmp / "warm"
        build_catalog(generated / "images", warm / "images", RuntimeConfig().pool_min_images)
        ingest(images=str(warm / "images"), store=(warm / "store").as_uri())
        encode(
            store=(warm / "store").as_uri(),
            encoder=args.encoder,
            weights=args.weights,
            device=args.device,
        )

        catalog = tmp / "catalog"
        build_catalog(generated / "images", catalog, args.images)
        store = (tmp / "store").as_uri()
        ingest(images=str(catalog), store=store)

        samples: list[tuple[float, float, float, float]] = []  # t, main RSS, max RSS, Σ PSS
        stop = threading.Event()

        def sample() -> None:
            start = time.perf_counter()
            while not stop.is_set():
                pids = _encoding_processes()
                rss = [_memory_mib(pid, "Rss") for pid in pids]
                pss = sum(_memory_mib(pid, "Pss") for pid in pids)
                samples.append((time.perf_counter() - start, rss[0], max(rss), pss))
                stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        server_before = _server_cpu_seconds()
        started = time.perf_counter()
        summary = encode(
            store=store, encoder=args.encoder, weights=args.weights, device=args.device
        )
        wall = time.perf_counter() - started
        server_cpu = _server_cpu_seconds() - server_before
        stop.set()
        sampler.join()

    # After the flow, so the sweep's large batches do not inflate the flow's memory figures.
    files = sorted((generated / "images").rglob("*.jpg"))[: args.naive]
    naive = naive_loop(files, runtime.encoder.to(memory_format=torch.contiguous_format))
    sweep = bound_sweep(runtime)
    best = max(sweep, key=lambda c: c.images_per_s)

    flow_rate = summary.encoded / wall
    quarter = [s for s in samples if s[0] <= wall / 4]
    print(f"catalog: {summary.encoded} images encoded, {summary.rejected} rejected, {wall:.1f}s")
    print("bound sweep (forward only, images/s):")
    for choice in sweep:
        layout = "channels_last" if choice.channels_last else "NCHW"
        print(f"  batch {choice.batch_size:3d} {layout:13s} {choice.images_per_s:7.1f}")
    print(f"naive loop (baseline)  : {naive:7.1f} images/s  ({len(files)} images)")
    print(
        f"bound (best of sweep)  : {best.images_per_s:7.1f} images/s  (batch {best.batch_size}, "
        f"{'channels_last' if best.channels_last else 'NCHW'})"
    )
    print(f"encode flow (wall)     : {flow_rate:7.1f} images/s")
    print(
        f"encode flow (in shards): {summary.images_per_s:7.1f} images/s   (decode+forward+write,"
        f" without planning and task hand-offs); Prefect server used {server_cpu:.1f} CPU-s "
        f"of the {wall:.1f} s run"
    )
    print(f"ratio flow/naive       : {flow_rate / naive:7.2f}x   (target >= 2.00x)")
    print(f"ratio flow/bound       : {flow_rate / best.images_per_s:7.2f}x   (target >= 0.75x)")
    print(
        "memory (MiB, sampled every 0.5 s; encoding processes = this one, its fork server"
        " and encoding/decoding processes):\n"
        f"  main process RSS   : first quarter max {max(q[1] for q in quarter):.0f}, "
        f"whole run max {max(q[1] for q in samples):.0f}\n"
        f"  largest process RSS: first quarter max {max(q[2] for q in quarter):.0f}, "
        f"whole run max {max(q[2] for q in samples):.0f}   (target < 2048, flat)\n"
        f"  all encoding processes, sum of PSS: first quarter max "
        f"{max(q[3] for q in quarter):.0f}, whole run max {max(q[3] for q in samples):.0f}"
    )


if __name__ == "__main__":
    main()
