"""Nightly reindex cost: a 1 % change against the full build, in the same run.

Both timed runs are the Prefect ``reindex`` flow on the same synthetic catalog:

* **full build** (the baseline) — the flow on an empty store: ingest every photo (hash,
  decode check), encode every photo's box crop and its mirror (no locator in the store:
  the whole photo), build and publish the index;
* **nightly reindex** — after 1 % of the catalog changed: a few new photos (whole new
  products), a few re-shot (other bytes under the same name) and a few removed, the same
  flow again. Its cost must follow the change, not the catalog: the target is ≤ 10 % of the
  full build.

A warm-up run on a tiny catalog first starts Prefect's temporary server and builds and
tunes the encoder (a worker that ran last night has both); both timed runs then run in this
process. Stage seconds come from the run summaries.

    python bench/reindex.py [--images 2000] [--change 0.01] [--size 320x400] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# A busy machine can take longer than the default 20 s to start the temporary server.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VIEWS = 4


def catalog(cache: Path, images: int, size: tuple[int, int], seed: int) -> Path:
    """A cached synthetic catalog of ``images`` photos (``images / 4`` products)."""
    from tiefvision_core.catalog.synthetic import generate_catalog

    folder = cache / f"{images // VIEWS}x{VIEWS}-{size[0]}x{size[1]}-seed{seed}"
    if not (folder / "images").is_dir():
        print(f"generating {images // VIEWS * VIEWS} synthetic photos in {folder} …", flush=True)
        generate_catalog(folder, products=images // VIEWS, views=VIEWS, seed=seed, size=size)
    return folder / "images"


def change(images: Path, donor: Path, count: int) -> dict[str, int]:
    """Change ``count`` photos of ``images``: about 40 % new (whole products from
    ``donor``), 30 % re-shot (a donor photo's bytes under an existing name), 30 % removed."""
    products = sorted(p for p in images.iterdir() if p.is_dir())
    donors = sorted(p for p in donor.iterdir() if p.is_dir())
    new_products = max(1, round(0.4 * count / VIEWS))
    rest = count - new_products * VIEWS
    reshot, removed = (rest + 1) // 2, rest // 2
    for k in range(new_products):
        shutil.copytree(donors[k], images / f"new-{k:03d}")
    donor_photos = sorted(p for d in donors[new_products:] for p in d.glob("*.jpg"))
    targets = [p / "view-1.jpg" for p in products[: reshot + removed]]
    for target, source in zip(targets[:reshot], donor_photos, strict=False):
        target.write_bytes(source.read_bytes())
    for target in targets[reshot:]:
        target.unlink()
    return {"new": new_products * VIEWS, "changed": reshot, "removed": removed}


def timed(images: Path, store: Path, device: str | None):
    from flows.reindex import reindex

    started = time.perf_counter()
    summary = reindex(images=str(images), store=store.as_uri(), device=device)
    return time.perf_counter() - started, summary


def show(name: str, seconds: float, summary) -> None:
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in summary.stages.items())
    [index] = summary.indexes
    print(
        f"{name:16s}: {seconds:7.1f} s  ({summary.new} new, {summary.changed} changed, "
        f"{summary.removed} removed; {summary.encoded} photos encoded; index {index.action}, "
        f"{index.vectors_computed} vectors computed)\n{'':18s}stages: {stages}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--change", type=float, default=0.01, help="share of photos changed")
    parser.add_argument("--size", default="320x400", help="WxH of the photos")
    parser.add_argument("--device", default=None, help="auto, cpu or cuda")
    parser.add_argument("--cache", type=Path, default=Path("bench/results/reindex"))
    args = parser.parse_args()
    if args.images < 2000:
        print("note: the acceptance target is stated for at least 2,000 photos")

    size = tuple(int(v) for v in args.size.lower().split("x"))
    source = catalog(args.cache, args.images, size, seed=0)
    count = max(VIEWS, round(args.change * args.images))
    donor = catalog(args.cache, 2 * count + 2 * VIEWS, size, seed=1)
    tiny = catalog(args.cache, VIEWS, size, seed=2)

    with tempfile.TemporaryDirectory(prefix="bench-reindex-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        timed(tiny, work / "warm-store", args.device)
        print(f"warm-up (Prefect server start, encoder build and tuning; excluded): "
              f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip

        images = work / "images"
        shutil.copytree(source, images)
        full_s, full = timed(images, work / "store", args.device)
        show("full build", full_s, full)

        expected = change(images, donor, count)
        nightly_s, nightly = timed(images, work / "store", args.device)
        show("nightly reindex", nightly_s, nightly)
        got = {"new": nightly.new, "changed": nightly.changed, "removed": nightly.removed}
        if got != expected:
            raise SystemExit(f"the reindex saw {got}, the bench changed {expected}")

    ratio = nightly_s / full_s
    print(f"catalog: {full.images} photos, {os.cpu_count()} cores; changed {count} "
          f"({count / full.images:.1%}): {expected}")  # fmt: skip
    print(f"ratio nightly/full: {ratio:.1%}  (target <= 10%)")


if __name__ == "__main__":
    main()
