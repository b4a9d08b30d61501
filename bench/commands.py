"""Whole commands as a user runs them: fresh processes, the CLI, real start-up.

Each figure is measured in the same run as its reference, and the ratio printed:

* **queries** — ``tiefvision locate FILE --json``, ``search FILE --json``, ``search --id ID
  --json``: wall time of a fresh process (median of ``--repeat``), against the same call
  made again in one process after a warm-up (the CLI's ``main`` in-process). With
  ``--before DIR`` (a worktree of an older commit), the same cold commands from that tree
  (``PYTHONPATH=DIR python -m tiefvision_cli.main``), alternated with the current ones;
* **encode** — ``tiefvision encode`` of 400 (and with ``--large`` 4,000) new photos, with
  each of ``--backends`` (default ``torch,auto``: PyTorch, then the measured choice), whole
  command (after an untimed ``tiefvision ingest``), against the forward-only bound
  (batched forward passes on preprocessed tensors, best of a small sweep, in-process) and a
  naive loop (PIL decode, one photo per forward), measured in a separate process right
  after each command;
* **reindex** — on ``rclone serve s3`` with a locator: ``ingest``, ``import-boxes``
  (a subset of the catalog's true boxes), ``train-locator --max-epochs 3``, then the full
  build (``tiefvision reindex`` locating and encoding every photo, building the index),
  then a 1 % change and ``tiefvision reindex`` again (cold), against the same kind of
  change reindexed warm in one process (after a warm-up reindex of a one-photo change);
* **serve** — ``tiefvision serve`` spawned on a free port, time until ``/api/health``
  answers 200.

Every command runs with a fresh environment: its own empty ``PREFECT_HOME`` (a command that
runs a flow starts Prefect's temporary server, which users pay too), ``XDG_CACHE_HOME``
kept across the run (as a user's ``~/.cache``); the queries and serve are also run once
with an empty ``XDG_CACHE_HOME`` (the very first run on a machine). Peak RSS is the largest
process of the command's tree (``wait4``'s ``ru_maxrss``).

    python bench/commands.py [--photos 2000] [--repeat 3] [--large] [--before DIR]
                             [--skip encode,reindex,queries,serve] [--out results.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
sys.path.insert(0, str(ROOT))  # tests.s3_server: the same S3 server as the tests
from tests.s3_server import S3Server, free_port  # noqa: E402

CLI = [PYTHON, "-m", "tiefvision_cli.main"]
VIEWS = 4


# ---------------------------------------------------------------- processes and environment


@dataclass
class Run:
    seconds: float
    peak_rss_mib: float
    stdout: str
    stderr: str


class Env:
    """Fresh environments for commands: a new PREFECT_HOME each, a shared or empty cache."""

    def __init__(self, work: Path, cache: Path) -> None:
        self.work, self.cache, self.count = work, cache, 0
        self.extra: dict[str, str] = {}

    def make(self, *, empty_cache: bool = False, pythonpath: str | None = None) -> dict:
        self.count += 1
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "TIEFVISION_", "AWS_")) and k != "PYTHONPATH"
        }
        home = self.work / f"prefect-{self.count}"
        home.mkdir(parents=True)
        env["PREFECT_HOME"] = str(home)
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # no network on this machine
        # A busy 2-core machine can take longer than the default 20 s to start the server.
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
        if empty_cache:
            cache = self.work / f"empty-cache-{self.count}"
            cache.mkdir()
            env["XDG_CACHE_HOME"] = str(cache)
        else:
            env["XDG_CACHE_HOME"] = str(self.cache)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        env.update(self.extra)
        return env


def run(argv: list[str], env: dict, *, check: bool = True, timeout: float = 3600) -> Run:
    """Run a command to its end; wall seconds and the peak RSS of its process tree."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        # ``python -m`` puts the working folder first on sys.path: run in the tree imported.
        cwd = env.get("PYTHONPATH") or ROOT
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=err, cwd=cwd)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = Run(seconds, usage.ru_maxrss / 1024, out.read(), err.read())
    if check and process.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv[:6])} … exited {process.returncode}:\n"
            f"{result.stderr[-3000:]}\n{result.stdout[-1000:]}"
        )
    return result


def tv(*args: str) -> list[str]:
    return [*CLI, *args]


def helper(mode: str, spec: dict, env: dict) -> dict:
    """Run this file in ``mode`` in a fresh process; its last stdout line is JSON."""
    done = run([PYTHON, __file__, "--helper", mode, json.dumps(spec)], env)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- catalogs and changes


def catalog(cache: Path, photos: int, seed: int) -> Path:
    """A cached synthetic catalog (320×400, as ``tiefvision synth``): its folder."""
    from tiefvision_core.catalog.synthetic import generate_catalog

    folder = cache / f"{photos // VIEWS}x{VIEWS}-seed{seed}"
    if not (folder / "boxes.csv").is_file():
        print(f"generating {photos // VIEWS * VIEWS} synthetic photos in {folder} …", flush=True)
        generate_catalog(folder, products=photos // VIEWS, views=VIEWS, seed=seed)
    return folder


def change(images: Path, donors: list[Path], count: int, tag: str) -> dict[str, int]:
    """Change ``count`` photos: ~40 % new (whole donor products), 30 % re-shot (donor bytes
    under an existing name), 30 % removed. ``donors`` are consumed (popped)."""
    products = sorted(p for p in images.iterdir() if p.is_dir() and not p.name.startswith("new-"))
    new_products = max(1, round(0.4 * count / VIEWS))
    rest = count - new_products * VIEWS
    reshot, removed = (rest + 1) // 2, rest // 2
    for k in range(new_products):
        shutil.copytree(donors.pop(), images / f"new-{tag}-{k:03d}")
    targets = [p / "view-1.jpg" for p in products if (p / "view-1.jpg").exists()][
        : reshot + removed
    ]
    for target in targets[:reshot]:
        source = donors.pop() / "view-2.jpg"
        target.write_bytes(source.read_bytes())
    for target in targets[reshot:]:
        target.unlink()
    return {"new": new_products * VIEWS, "changed": reshot, "removed": removed}


def subset_boxes(folder: Path, target: Path, photos: int) -> Path:
    with open(folder / "boxes.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:photos]
    with open(target, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return target


# ---------------------------------------------------------------- S3 server


# ---------------------------------------------------------------- results table


@dataclass
class Row:
    figure: str
    cold: str
    warm: str = "—"
    bound: str = "—"
    ratio: str = "—"
    peak_rss_mib: str = "—"
    target: str = "—"
    data: dict = field(default_factory=dict)


ROWS: list[Row] = []


def add(row: Row) -> None:
    ROWS.append(row)
    print(
        f"  {row.figure}: {row.cold} | warm {row.warm} | bound {row.bound} | {row.ratio} | "
        f"peak RSS {row.peak_rss_mib} | target {row.target}",
        flush=True,
    )


def table() -> str:
    head = ["figure", "cold / whole", "warm", "bound", "ratio", "peak RSS MiB", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in ROWS:
        cells = [r.figure, r.cold, r.warm, r.bound, r.ratio, r.peak_rss_mib, r.target]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def med(values: list[float]) -> float:
    return statistics.median(values)


def secs(values: list[float]) -> str:
    return f"{med(values):.2f} s" + (
        f" ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else ""
    )


# ---------------------------------------------------------------- sections


def bench_encode(args, envs: Env, work: Path, photos: int, backend: str = "auto") -> None:
    folder = catalog(args.cache, photos, seed=10)
    whole, naive, bound, rss = [], [], [], []
    for attempt in range(args.encode_repeat):
        store = (work / f"encode-{photos}-{backend}-{attempt}").as_uri()
        run(
            tv("ingest", "--images", str(folder / "images"), "--store", store, "--json"),
            envs.make(),
        )
        argv = tv("encode", "--store", store, "--backend", backend, "--json")
        done = run(argv, envs.make())
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        encoded = summary.get("encoded", photos)
        print(f"  encode summary: {summary.get('images_per_s')} img/s in shards", flush=True)
        whole.append(encoded / done.seconds)
        rss.append(done.peak_rss_mib)
        print(
            f"  encode {photos}: {done.seconds:.1f} s whole command, {encoded} encoded", flush=True
        )
        ref = helper("encode-ref", {"images": str(folder / "images"), "naive": min(photos, 200)},
                     envs.make())  # fmt: skip
        naive.append(ref["naive"])
        bound.append(ref["bound"])
        print(f"  in-process: naive {ref['naive']:.1f} img/s, bound {ref['bound']:.1f} img/s "
              f"({ref['best']})", flush=True)  # fmt: skip
    w, n, b = med(whole), med(naive), med(bound)
    target = "≥ 0.75× bound, ≥ 2× naive" if photos < 1000 else "≥ 0.8× bound"
    add(Row(
        f"`tiefvision encode --backend {backend}`, {photos} new photos (img/s)",
        f"{w:.1f} img/s", f"naive loop {n:.1f} img/s", f"{b:.1f} img/s",
        f"{w / b:.2f}× bound, {w / n:.2f}× naive", f"{max(rss):.0f}", target,
        {"whole": whole, "naive": naive, "bound": bound, "rss": rss},
    ))  # fmt: skip


def bench_reindex(args, envs: Env, work: Path) -> Path:
    """Returns the local path of the store (inside the S3 server's root) for the queries."""
    folder = catalog(args.cache, args.photos, seed=0)
    count = max(VIEWS, round(0.01 * args.photos))
    # Each cold run and each warm run (with its warm-up) takes up to 20 donor products.
    donor_folder = catalog(args.cache, VIEWS * max(16, 40 * args.reindex_repeat), seed=1)
    donors = sorted(p for p in (donor_folder / "images").iterdir() if p.is_dir())
    images = work / "reindex-images"
    shutil.copytree(folder / "images", images)

    (work / "s3root").mkdir(parents=True, exist_ok=True)
    server = S3Server(work / "s3root", free_port())
    server.start()
    try:
        bucket = server.new_bucket("bench")
        store = f"s3://{bucket}/tv"
        envs.extra = {
            **server.env(),
            "TIEFVISION_STORE_URL": store,
            "TIEFVISION_DATABASE_URL": f"sqlite:///{work / 'annotations.db'}",
        }
        setup = {}
        for name, argv in [
            ("ingest", tv("ingest", "--images", str(images), "--json")),
            ("import-boxes", tv("import-boxes", str(subset_boxes(
                folder, work / "boxes.csv", args.boxes)), "--json")),
            ("train-locator", tv("train-locator", "--max-epochs", "3", "--json")),
        ]:  # fmt: skip
            done = run(argv, envs.make())
            setup[name] = done.seconds
            print(f"  {name}: {done.seconds:.1f} s", flush=True)
        full = run(tv("reindex", "--images", str(images), "--json"), envs.make())
        print(f"  full build (reindex locating + encoding every photo): {full.seconds:.1f} s",
              flush=True)  # fmt: skip
        cold, cold_rss, warm = [], [], []
        for attempt in range(args.reindex_repeat):
            expected = change(images, donors, count, f"c{attempt}")
            done = run(tv("reindex", "--images", str(images), "--json"), envs.make())
            summary = json.loads(done.stdout.strip().splitlines()[-1])
            cold.append(done.seconds)
            cold_rss.append(done.peak_rss_mib)
            print(f"  reindex (cold, {expected}): {done.seconds:.1f} s; stages "
                  f"{summary.get('stages')}", flush=True)  # fmt: skip
            spec = {"images": str(images), "donors": [str(d) for d in donors[-20:]],
                    "count": count, "tag": f"w{attempt}"}  # fmt: skip
            donors = donors[:-20]
            ref = helper("reindex-warm", spec, envs.make())
            warm.append(ref["seconds"])
            print(f"  reindex (warm in-process, after a {ref['warmup']:.1f} s warm-up): "
                  f"{ref['seconds']:.1f} s; stages {ref.get('stages')}", flush=True)  # fmt: skip
        c, w = med(cold), med(warm)
        add(Row(
            f"`tiefvision reindex`, 1 % of {args.photos} changed, locator, S3",
            secs(cold), secs(warm), f"full build {full.seconds:.1f} s",
            f"{c / w:.2f}× warm, {c / full.seconds:.1%} of full", f"{max(cold_rss):.0f}",
            "≤ 2× warm, ≤ 10 % of full",
            {"cold": cold, "warm": warm, "full": full.seconds, "setup": setup,
             "rss": cold_rss, "full_rss": full.peak_rss_mib},
        ))  # fmt: skip
        add(Row(f"full build (`tiefvision reindex` on {args.photos} ingested photos)",
                f"{full.seconds:.1f} s", peak_rss_mib=f"{full.peak_rss_mib:.0f}",
                data={"setup": setup}))  # fmt: skip
    finally:
        server.stop()
        envs.extra = {}
    return work / "s3root" / "bench" / "tv"


def query_args(photo: Path, image_id: str) -> dict[str, list[str]]:
    return {
        "locate FILE": ["locate", str(photo), "--json"],
        "search FILE": ["search", str(photo), "--json"],
        "search --id": ["search", "--id", image_id, "--json"],
    }


def bench_queries(args, envs: Env, store: str, photo: Path, image_id: str) -> None:
    queries = query_args(photo, image_id)
    targets = {"locate FILE": "≤ 3 s", "search FILE": "≤ 3 s", "search --id": "≤ 2 s"}
    trees = [("now", None)] + ([("before", str(args.before))] if args.before else [])
    times: dict = {(q, t): [] for q in queries for t, _ in trees}
    rss: dict = {(q, t): [] for q in queries for t, _ in trees}
    first: dict = {}
    envs.extra = {"TIEFVISION_STORE_URL": store}
    # One run of each before timing: the persistent cache holds what a second run finds.
    for argv in queries.values():
        for _tree, path in trees:
            run(tv(*argv), envs.make(pythonpath=path))
    for _ in range(args.repeat):
        for name, argv in queries.items():
            for tree, path in trees:  # alternated, so load changes hit both alike
                done = run(tv(*argv), envs.make(pythonpath=path))
                times[name, tree].append(done.seconds)
                rss[name, tree].append(done.peak_rss_mib)
    for name, argv in queries.items():
        done = run(tv(*argv), envs.make(empty_cache=True))
        first[name] = done.seconds
    warm = helper("warm-cli", {"calls": list(queries.values()), "repeat": args.repeat},
                  envs.make())  # fmt: skip
    envs.extra = {}
    for name in queries:
        c, w = times[name, "now"], warm[" ".join(queries[name])]
        before = times.get((name, "before"))
        add(Row(
            f"`tiefvision {name} --json`"
            + (f" (before: {secs(before)})" if before else ""),
            secs(c) + f"; first run on the machine {first[name]:.2f} s",
            secs(w), "—", f"{med(c) / med(w):.1f}× warm"
            + (f", {med(before) / med(c):.1f}× faster than before" if before else ""),
            f"{max(rss[name, 'now']):.0f}", targets[name],
            {"cold": c, "warm": w, "before": before, "first": first[name],
             "rss": rss[name, "now"]},
        ))  # fmt: skip


def bench_serve(args, envs: Env, store: str) -> None:
    starts, rss, first = [], [], None
    envs.extra = {"TIEFVISION_STORE_URL": store}
    for attempt in range(args.repeat + 1):
        empty = attempt == args.repeat
        port = free_port()
        env = envs.make(empty_cache=empty)
        started = time.perf_counter()
        process = subprocess.Popen(
            tv("serve", "--port", str(port)), env=env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        seconds = None
        while process.poll() is None and time.perf_counter() - started < 300:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                    if r.status == 200:
                        seconds = time.perf_counter() - started
                        break
            except OSError:
                time.sleep(0.05)
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            hwm = int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM")).split()[1])
        except (OSError, StopIteration):
            hwm = 0
        process.terminate()
        process.wait(timeout=30)
        if seconds is None:
            raise SystemExit("tiefvision serve did not answer /api/health")
        if empty:
            first = seconds
        else:
            starts.append(seconds)
            rss.append(hwm / 1024)
    envs.extra = {}
    add(Row(
        "`tiefvision serve` start-up to first /api/health 200",
        secs(starts) + f"; first run on the machine {first:.2f} s", peak_rss_mib=f"{max(rss):.0f}",
        data={"cold": starts, "first": first, "rss": rss},
    ))  # fmt: skip


# ---------------------------------------------------------------- helper modes (in-process)


def helper_encode_ref(spec: dict) -> dict:
    import importlib.util

    import torch

    bench_encode_path = Path(__file__).with_name("encode.py")
    module_spec = importlib.util.spec_from_file_location("bench_encode", bench_encode_path)
    bench = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(bench)
    from tasks.encoding import get_runtime
    from tiefvision_core.encoding.runtime import RuntimeConfig

    runtime = get_runtime(RuntimeConfig(device="cpu", threads=os.cpu_count() or 1))
    files = sorted(Path(spec["images"]).rglob("*.jpg"))[: spec["naive"]]
    plain = runtime.encoder.to(memory_format=torch.contiguous_format)
    naive, bound = [], []
    half = max(1, len(files) // 2)
    for part in (files[:half], files[half:]):  # naive and bound alternated: load hits both
        naive.append(bench.naive_loop(part, plain))
        sweep = [
            runtime._measure(n, cl, seconds=1.5) for n in (2, 4, 8, 16) for cl in (False, True)
        ]
        best = max(sweep, key=lambda c: c.images_per_s)
        bound.append(best.images_per_s)
    naive, bound = statistics.median(naive), statistics.median(bound)
    layout = "channels_last" if best.channels_last else "NCHW"
    return {"naive": naive, "bound": bound, "best": f"batch {best.batch_size} {layout}"}


def _cli(argv: list[str]) -> float:
    import contextlib
    import io

    from tiefvision_cli.main import main

    sys.argv = ["tiefvision", *argv]
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main()
        except SystemExit as done:
            if done.code:
                raise
    return time.perf_counter() - started


def helper_warm_cli(spec: dict) -> dict:
    out = {}
    for argv in spec["calls"]:
        _cli(argv)  # warm-up
        out[" ".join(argv)] = [_cli(argv) for _ in range(spec["repeat"])]
    return out


def helper_reindex_warm(spec: dict) -> dict:
    images = Path(spec["images"])
    donors = [Path(d) for d in spec["donors"]]
    argv = ["reindex", "--images", str(images), "--json"]
    change(images, donors, VIEWS, spec["tag"] + "warmup")  # a small change: all stages run
    warmup = _cli(argv)
    change(images, donors, spec["count"], spec["tag"])
    import contextlib
    import io

    from tiefvision_cli.main import main

    sys.argv = ["tiefvision", *argv]
    buffer = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(buffer):
        try:
            main()
        except SystemExit as done:
            if done.code:
                raise
    seconds = time.perf_counter() - started
    try:
        stages = json.loads(buffer.getvalue().strip().splitlines()[-1]).get("stages")
    except (ValueError, IndexError):
        stages = None
    return {"seconds": seconds, "warmup": warmup, "stages": stages}


HELPERS = {
    "encode-ref": helper_encode_ref,
    "warm-cli": helper_warm_cli,
    "reindex-warm": helper_reindex_warm,
}


# ---------------------------------------------------------------- main


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--helper":
        sys.path.insert(0, str(ROOT))
        result = HELPERS[sys.argv[2]](json.loads(sys.argv[3]))
        print(json.dumps(result), flush=True)
        return

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2000, help="reindex catalog size")
    parser.add_argument("--boxes", type=int, default=48, help="photos annotated for the locator")
    parser.add_argument("--repeat", type=int, default=3, help="cold runs per query / serve")
    parser.add_argument("--encode-repeat", type=int, default=1)
    parser.add_argument("--reindex-repeat", type=int, default=1)
    parser.add_argument("--encode-photos", type=int, default=400, help="new photos to encode")
    parser.add_argument("--large", action="store_true", help="also encode 4,000 new photos")
    parser.add_argument(
        "--backends", default="torch,auto", help="encode with each (PyTorch bound either way)"
    )
    parser.add_argument("--before", type=Path, help="worktree of an older commit to compare")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench/results/commands")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    skip = set(filter(None, args.skip.split(",")))
    args.cache.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    print(f"commit {commit[:100]}\n{os.cpu_count()} cores, load {os.getloadavg()}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-commands-") as tmp:
        work = Path(tmp)
        envs = Env(work, args.cache / "xdg-cache")
        if "encode" not in skip:
            print("encode …", flush=True)
            for photos in [args.encode_photos] + ([4000] if args.large else []):
                for backend in args.backends.split(","):
                    bench_encode(args, envs, work, photos, backend)
        if "reindex" not in skip or "queries" not in skip or "serve" not in skip:
            print("reindex …", flush=True)
            s3_store = bench_reindex(args, envs, work)
            local = work / "local-store"
            shutil.copytree(s3_store, local)  # the same store, as a local folder
            store = local.as_uri()
            folder = catalog(args.cache, args.photos, seed=0)
            photo = sorted((folder / "images").rglob("view-3.jpg"))[0]
            from tiefvision_core.catalog.manifest import image_id_for

            image_id = image_id_for(photo.relative_to(folder / "images").as_posix())
            if "queries" not in skip:
                print("queries …", flush=True)
                bench_queries(args, envs, store, photo, image_id)
            if "serve" not in skip:
                print("serve …", flush=True)
                bench_serve(args, envs, store)

    print(f"\ncommit {commit[:100]}; load at the end {os.getloadavg()}\n")
    print(table())
    if args.out:
        args.out.write_text(json.dumps(
            {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             "args": {k: str(v) for k, v in vars(args).items()},
             "rows": [asdict(r) for r in ROWS]}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
