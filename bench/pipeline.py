"""A catalog from ``ingest`` to a live index with the locator, as a user runs it: whole
commands in fresh processes, photos/s per stage beside the single-pass bound.

Stages (each a fresh ``tiefvision`` process on a local store, a synthetic catalog of
``--photos`` photos plus rejects — a truncated JPEG, a text file named ``.jpg``, an empty
file): ``ingest`` → ``encode`` → ``import-boxes`` (the true boxes of ``--boxes`` photos) →
``train-locator`` → ``locate`` → ``rebuild-index``; then a 1 % change (new, re-shot and
removed photos) and the nightly ``reindex``.

The **single-pass bound** is measured in the same run, in a fresh process: one forward pass
per photo at the encoder's default side (224), batched, on pre-decoded pixels, the best of
a small batch sweep — with PyTorch and with the runtime's measured backend. The per-photo
stages (encode, locate, rebuild-index) are reported as photos/s and as a fraction of that
bound: 1.0 would mean every photo costs exactly one forward pass and nothing else.

    python bench/pipeline.py [--photos 2000] [--boxes 48] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import commands  # bench/commands.py: processes, catalogs, changes

ROOT = commands.ROOT
PER_PHOTO = ("encode", "locate", "rebuild-index")


def add_rejects(images: Path) -> int:
    """Odd files a real catalog holds: each must become a reject, not stop a stage."""
    odd = images / "odd"
    odd.mkdir(exist_ok=True)
    good = next(images.rglob("*.jpg")).read_bytes()
    (odd / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (odd / "notes.jpg").write_text("not a photo\n")
    (odd / "empty.jpg").write_bytes(b"")
    return 3


def bound(env: dict) -> dict:
    """Forward-only images/s at 224 on a pre-decoded batch, on the device the commands use
    (a GPU when there is one): PyTorch's best layout and batch, and the backend the runtime
    picks (ONNX Runtime where it measures faster, on the CPU)."""
    code = """
import json, os
from tiefvision_core.encoders import get_encoder
from tiefvision_core.encoding.runtime import EncodingRuntime
threads = os.cpu_count() or 1
torch_rt = EncodingRuntime(get_encoder("efficientnet_lite0"), device="auto", backend="torch",
                           threads=threads, workers=0, batch_size=1)
sizes = (64, 128, 256, 512) if torch_rt.cuda else (2, 4, 8, 16)
torch_best = max((torch_rt._measure(n, cl, seconds=2.0) for n in sizes
                  for cl in (False, True)), key=lambda c: c.images_per_s)
auto = EncodingRuntime(get_encoder("efficientnet_lite0"), device="auto", backend="auto",
                       threads=threads, workers=0, batch_size=1)
best = torch_best
if auto.backend == "onnxruntime":
    onnx = max((auto._measure_onnx(n, seconds=2.0) for n in (2, 4, 8, 16)),
               key=lambda c: c.images_per_s)
    best = max(best, onnx, key=lambda c: c.images_per_s)
print(json.dumps({"torch": torch_best.images_per_s, "best": best.images_per_s,
                  "backend": best.backend}))
"""
    done = commands.run([commands.PYTHON, "-c", code], env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_pipeline(
    args: argparse.Namespace, folder: Path, donors: list[Path], tree: str | None
) -> tuple[dict[str, float], dict[str, float], int, dict]:
    """Every stage of one tree (``tree``: a checkout run with ``PYTHONPATH``; None: this
    one) on a fresh copy of the catalog: seconds and peak RSS per stage, rejects, bound."""
    label = tree or "this tree"
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = Path(tmp)
        images = work / "images"
        shutil.copytree(folder / "images", images)
        rejects = add_rejects(images)
        envs = commands.Env(work, args.cache / "xdg-cache")
        envs.extra = {
            "TIEFVISION_STORE_URL": (work / "store").as_uri(),
            "TIEFVISION_DATABASE_URL": f"sqlite:///{work / 'annotations.db'}",
            "TIEFVISION_BACKEND": args.backend,
        }
        boxes = commands.subset_boxes(folder, work / "boxes.csv", args.boxes)
        tv = commands.tv
        stages = [
            ("ingest", tv("ingest", "--images", str(images), "--json")),
            ("encode", tv("encode", "--json")),
            ("import-boxes", tv("import-boxes", str(boxes), "--json")),
            ("train-locator", tv("train-locator", "--max-epochs", str(args.max_epochs), "--json")),
            ("locate", tv("locate", "--json")),
            ("rebuild-index", tv("rebuild-index", "--json")),
        ]
        seconds: dict[str, float] = {}
        rss: dict[str, float] = {}
        for name, argv in stages:
            done = commands.run(argv, envs.make(pythonpath=tree))
            seconds[name], rss[name] = done.seconds, done.peak_rss_mib
            if name == "train-locator":
                sides = json.loads(done.stdout.strip().splitlines()[-1]).get("locate_sides")
                print(f"  [{label}] locate sides: {sides or 'every trained side'}", flush=True)
            print(f"  [{label}] {name}: {done.seconds:.1f} s, peak RSS "
                  f"{done.peak_rss_mib:.0f} MiB", flush=True)  # fmt: skip
        count = max(commands.VIEWS, round(0.01 * args.photos))
        changed = commands.change(images, donors, count, "nightly")
        argv = tv("reindex", "--images", str(images), "--json")
        done = commands.run(argv, envs.make(pythonpath=tree))
        seconds["reindex 1 %"], rss["reindex 1 %"] = done.seconds, done.peak_rss_mib
        print(f"  [{label}] reindex ({changed}): {done.seconds:.1f} s", flush=True)
        limit = bound(envs.make()) if tree is None else {}
    return seconds, rss, rejects, limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--boxes", type=int, default=48, help="photos annotated for the locator")
    parser.add_argument("--max-epochs", type=int, default=3, help="train-locator epochs")
    parser.add_argument("--backend", default="auto", help="TIEFVISION_BACKEND for every stage")
    parser.add_argument(
        "--baseline",
        help="a checkout of an earlier commit (git worktree add DIR REV): its pipeline is "
        "timed first, on the same catalog, and its table printed beside this tree's",
    )
    parser.add_argument("--cache", type=Path, default=ROOT / "bench/results/commands")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    print(f"commit {commit[:100]}\n{os.cpu_count()} cores, load {os.getloadavg()}", flush=True)

    folder = commands.catalog(args.cache, args.photos, seed=0)
    donor_folder = commands.catalog(args.cache, commands.VIEWS * 16, seed=1)
    donors = sorted(p for p in (donor_folder / "images").iterdir() if p.is_dir())
    baseline = None
    if args.baseline:
        baseline = run_pipeline(args, folder, donors, str(Path(args.baseline).resolve()))
    seconds, rss, rejects, limit = run_pipeline(args, folder, donors, None)

    photos = args.photos // commands.VIEWS * commands.VIEWS
    print(f"\ncommit {commit[:100]}; load at the end {os.getloadavg()}")
    print(
        f"{photos} photos + {rejects} rejects; single-pass bound: PyTorch "
        f"{limit['torch']:.1f} photos/s, best ({limit['backend']}) {limit['best']:.1f}\n"
    )
    runs = [("this tree", seconds, rss)]
    if baseline is not None:
        runs.insert(0, (f"baseline {args.baseline}", baseline[0], baseline[1]))
    for label, times, memory in runs:
        _table(label, times, memory, photos, limit)
    if baseline is not None:
        before = sum(baseline[0][s] for s in PER_PHOTO)
        after = sum(seconds[s] for s in PER_PHOTO)
        print(f"\nper-photo stages: {before:.1f} s → {after:.1f} s ({before / after:.2f}× faster)")
    if args.out:
        date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        result = {"commit": commit, "date": date, "photos": photos, "seconds": seconds}
        if baseline is not None:
            result["baseline"] = {"tree": args.baseline, "seconds": baseline[0], "rss": baseline[1]}
        args.out.write_text(json.dumps({**result, "rss": rss, "bound": limit}, indent=2))


def _table(
    label: str, seconds: dict[str, float], rss: dict[str, float], photos: int, limit: dict
) -> None:
    count = max(commands.VIEWS, round(0.01 * photos))
    per_photo = sum(seconds[s] for s in PER_PHOTO)
    build = sum(v for k, v in seconds.items() if k != "reindex 1 %")
    print(f"\n{label}\n")
    print("| stage | seconds | photos/s | × PyTorch bound | × best bound | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for name, value in seconds.items():
        rate = (count if name == "reindex 1 %" else photos) / value
        print(f"| {name} | {value:.1f} | {rate:.1f} | {rate / limit['torch']:.3f} | "
              f"{rate / limit['best']:.3f} | {rss[name]:.0f} |")  # fmt: skip
    for name, total in (("per-photo stages", per_photo), ("ingest → live index", build)):
        rate = photos / total
        print(f"| **{name}** | {total:.1f} | {rate:.1f} | {rate / limit['torch']:.3f} | "
              f"{rate / limit['best']:.3f} | — |")  # fmt: skip
    print(f"\nnightly reindex of a 1 % change: {seconds['reindex 1 %'] / build:.1%} of the build")


if __name__ == "__main__":
    main()
