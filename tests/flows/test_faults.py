"""The fault test: the whole pipeline, run as a user runs it (one CLI command per stage, on a
real S3 server), on a catalog that holds real photos, odd but valid files and every kind of
bad file a real catalog has — with a SIGKILL at a random stage and a restart of the S3 server
in the middle of another.

At the end: every good photo is searchable exactly once, every bad one is a reject with its
reason, no temporary object is left anywhere, and ``CURRENT`` names a complete version.

The random choices come from one seed, printed on failure; ``TIEFVISION_FAULT_SEED=N`` replays
a run.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest

from tests.conftest import DATA, S3_KEY, S3_SECRET, S3Server, harness_api_url
from tiefvision_core.catalog.manifest import image_id_for, read_manifest
from tiefvision_core.index.search import search_by_id
from tiefvision_core.storage.urls import open_store
from tiefvision_core.vector_index.versions import open_index

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

REAL = DATA / "real"
BAD = DATA / "images" / "bad"
ODD = DATA / "images" / "odd"
#: Valid but unusual files: they must be ingested and searchable like any photo.
ODD_FILES = ("cmyk.jpg", "rotated-exif-6.jpg", "png-named.jpg", "gray16.png", "robe-été-ドレス.jpg")
MAX_BYTES = 1024 * 1024
#: Stages a SIGKILL may hit (import-boxes is a quick database write, not a flow).
KILLABLE = ("ingest", "encode", "train-locator", "locate", "rebuild-index", "reindex")


@dataclass
class Catalog:
    root: Path
    good: set[str] = field(default_factory=set)  # rel paths
    bad: dict[str, str] = field(default_factory=dict)  # rel path -> reject reason


def bad_catalog(root: Path) -> Catalog:
    """Real photos, odd valid files and every kind of bad file, in one source folder."""
    catalog = Catalog(root)
    for sub in ("ccp-dresses", "grocery-packages"):
        for photo in sorted((REAL / sub).glob("*.jpg")):
            target = root / sub / photo.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo, target)
            catalog.good.add(f"{sub}/{photo.name}")
        shutil.copyfile(REAL / sub / "LICENSE", root / sub / "LICENSE")
        catalog.bad[f"{sub}/LICENSE"] = "not_an_image"
    shutil.copyfile(REAL / "ccp-dresses" / "boxes.csv", root / "ccp-dresses" / "boxes.csv")
    catalog.bad["ccp-dresses/boxes.csv"] = "not_an_image"
    (root / "odd").mkdir()
    for name in ODD_FILES:
        shutil.copyfile(ODD / name, root / "odd" / name)
        catalog.good.add(f"odd/{name}")
    (root / "bad").mkdir()
    with open(BAD / "EXPECTED.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            shutil.copyfile(BAD / row["file"], root / "bad" / row["file"])
            catalog.bad[f"bad/{row['file']}"] = row["reason"]
    special = root / "special"
    special.mkdir()
    os.mkfifo(special / "fifo.jpg")
    catalog.bad["special/fifo.jpg"] = "not_a_regular_file"
    os.symlink("loop.jpg", special / "loop.jpg")
    catalog.bad["special/loop.jpg"] = "unreadable"
    os.symlink("/etc/passwd", special / "passwd.jpg")
    catalog.bad["special/passwd.jpg"] = "outside_source"
    os.symlink("/dev/zero", special / "zero.jpg")
    catalog.bad["special/zero.jpg"] = "outside_source"
    os.symlink("gone.jpg", special / "dangling.jpg")
    catalog.bad["special/dangling.jpg"] = "vanished"
    (special / "big.jpg").write_bytes(random.Random(1).randbytes(MAX_BYTES + 1))
    catalog.bad["special/big.jpg"] = "too_large"
    first = min(p.name for p in (REAL / "ccp-dresses").glob("*.jpg"))
    os.symlink(root / "ccp-dresses" / first, special / "link-inside.jpg")
    catalog.good.add("special/link-inside.jpg")  # a link inside the source is a photo
    return catalog


def _raw_keys(server: S3Server, bucket: str) -> list[str]:
    """Every key in the bucket, hidden ones included (the store's own listing hides them)."""
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


class Log(list[str]):
    """What the random choices did, printed as it happens (pytest shows it on failure)."""

    def append(self, line: str) -> None:
        print(line, flush=True)
        super().append(line)


class Runner:
    """Runs one CLI command per stage in its own process group, as a user or worker does."""

    def __init__(self, env: dict[str, str], log: Log) -> None:
        self.env, self.log = env, log

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "tiefvision_cli.main", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def run(self, *args: str, timeout: float = 900) -> str:
        process = self.start(*args)
        out, err = process.communicate(timeout=timeout)
        self.log.append(f"{args[0]}: rc {process.returncode}")
        assert process.returncode == 0, f"{args}: {err[-3000:]}{out[-2000:]}"
        return out

    def killed(self, *args: str, after_s: float) -> bool:
        """Start the command and SIGKILL its whole group after ``after_s``; True when the kill
        came before it finished."""
        process = self.start(*args)
        try:
            process.communicate(timeout=after_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            self.log.append(f"{args[0]}: SIGKILL after {after_s:.1f} s")
            return True
        self.log.append(f"{args[0]}: finished before the kill at {after_s:.1f} s")
        return False


def test_pipeline_survives_bad_files_a_kill_and_an_s3_restart(
    s3_env: S3Server, tmp_path: Path
) -> None:
    seed = int(os.environ.get("TIEFVISION_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    kill_stage, restart_stage = rng.choice(KILLABLE), rng.choice(KILLABLE)
    log = Log()
    log.append(f"seed {seed}: SIGKILL in {kill_stage}, S3 restart in {restart_stage}")
    catalog = bad_catalog(tmp_path / "catalog")
    bucket = s3_env.new_bucket()
    store_url = f"s3://{bucket}/tv"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        **os.environ,
        "PREFECT_API_URL": harness_api_url(),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "TIEFVISION_STORE_URL": store_url,
        "TIEFVISION_DATABASE_URL": f"sqlite:///{tmp_path / 'annotations.db'}",
        "TIEFVISION_MAX_IMAGE_BYTES": str(MAX_BYTES),
        "TIEFVISION_BATCH_SIZE": "4",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "TMPDIR": str(scratch),  # every temporary file of the stages lands here
    }
    runner = Runner(env, log)
    boxes = tmp_path / "boxes.csv"
    with open(REAL / "ccp-dresses" / "boxes.csv", newline="") as source, open(boxes, "w") as out:
        rows = list(csv.DictReader(source))
        writer = csv.DictWriter(out, fieldnames=["image", "left", "top", "right", "bottom"])
        writer.writeheader()
        writer.writerows({**row, "image": f"ccp-dresses/{row['image']}"} for row in rows)

    def change_the_source() -> None:
        """Before the nightly run: one photo removed, one added, one swapped for a link out."""
        removed = sorted(p for p in catalog.good if p.startswith("grocery-packages/"))[0]
        (catalog.root / removed).unlink()
        catalog.good.discard(removed)
        shutil.copyfile(ODD / "progressive.jpg", catalog.root / "odd" / "progressive.jpg")
        catalog.good.add("odd/progressive.jpg")
        swapped = sorted(p for p in catalog.good if p.startswith("grocery-packages/"))[0]
        (catalog.root / swapped).unlink()
        os.symlink("/etc/passwd", catalog.root / swapped)
        catalog.good.discard(swapped)
        catalog.bad[swapped] = "outside_source"

    stages: list[tuple[str, tuple[str, ...]]] = [
        ("ingest", ("ingest", "--images", str(catalog.root))),
        ("encode", ("encode",)),
        ("import-boxes", ("import-boxes", str(boxes))),
        ("train-locator", ("train-locator", "--max-epochs", "3", "--min-images", "4")),
        ("locate", ("locate",)),
        ("rebuild-index", ("rebuild-index",)),
        ("change", ()),
        ("reindex", ("reindex", "--images", str(catalog.root), "--lock-ttl", "5")),
    ]
    for name, args in stages:
        if name == "change":
            change_the_source()
            continue
        outage = None
        if name == restart_stage:
            delay = rng.uniform(2.0, 8.0)
            outage = threading.Timer(delay, s3_env.restart, kwargs={"down_seconds": 2.0})
            outage.start()
            log.append(f"{name}: S3 down for 2 s after {delay:.1f} s")
        if name == kill_stage:
            runner.killed(*args, after_s=rng.uniform(4.0, 15.0))
        runner.run(*args)  # a rerun finishes what a killed run left
        if outage is not None:
            outage.join()

    store = open_store(store_url)
    manifest = {row["rel_path"]: row for row in read_manifest(store).to_pylist()}
    ok = {path for path, row in manifest.items() if row["status"] == "ok"}
    assert ok == catalog.good, log
    reasons = {path: row["reason"] for path, row in manifest.items() if row["status"] == "rejected"}
    assert reasons == catalog.bad, log

    pointer = store.read_pointer("indexes/unsupervised/CURRENT")
    assert pointer is not None and store.exists(f"indexes/unsupervised/{pointer}/metadata.json")
    opened = open_index(store, "unsupervised")
    counts = Counter(opened.ids["image_id"])
    good_ids = {image_id_for(path) for path in catalog.good}
    assert set(counts) == good_ids and set(counts.values()) == {1}, log
    for image_id in good_ids:  # found by its own query, once (a flat photo scores < 1)
        hits = search_by_id(opened, image_id, k=len(counts), include_self=True).results
        found = Counter(hit.image_id for hit in hits)
        assert found[image_id] == 1 and set(found.values()) == {1}, image_id

    leftovers = [
        key
        for key in _raw_keys(s3_env, bucket)
        if "/." in key or key.startswith(".") or "/staging/" in key
    ]
    assert not leftovers, leftovers
    # Python's multiprocessing (pymp-*: a forkserver's socket folder, which a SIGKILL cannot
    # clean) and torch (torchinductor_*: its compile cache) keep their own small folders there.
    ours = [p for p in scratch.iterdir() if not p.name.startswith(("pymp-", "torchinductor_"))]
    assert not ours, f"a stage left temporary files behind: {ours}"
    assert not [p for p in (tmp_path / "cache").rglob(".tmp-*")], "partial cache file left"
