"""The fault-and-abuse test (issue 28's acceptance): items 1–6 of the issue end to end, in
one scenario on one small catalog of real photos, odd but valid files and rejects
(``test_faults.bad_catalog``), run as a user runs it: one CLI command per step on a local
``file://`` store with a SQLite annotations database, and ``tiefvision serve`` as its own
process.

1. ingest → import-boxes → train-locator → reindex: a live index of every good photo, once;
   every reject carries its reason.
2. (item 6) a reindex of new photos SIGKILLed alone while its worker processes exist: none
   of them survives it; the next reindex finishes the work, each photo indexed once.
3. (item 2) a photo with a hand-imported box renamed (same bytes): the box follows it to the
   new id, and the reindex neither locates nor encodes anything.
4. (item 3) another boxed photo's bytes replaced by another picture: its box is stale, and
   train-locator leaves it out of its crops dataset, counted as stale.
5. (item 1) photos removed, then ``index use`` back to a version that holds them: search by
   id never answers with them, and a query by one is refused in one line.
6. (item 4) ``TIEFVISION_MAX_IMAGE_PIXELS`` below a real photo's pixels: ``locate`` and
   ``search`` of that photo refuse it in one line naming the limit; above, they answer.
7. (item 5) a flood of concurrent large uploads to ``tiefvision serve``: each is answered
   200 or 503 + Retry-After, ``/api/health`` answers within 2 s throughout, and search
   afterwards still never answers with a removed photo (the boxes of steps 3 and 4 are as
   the API shows them too).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bench.serve_flood import Watch, photo_jpeg, upload
from tests.conftest import harness_api_url
from tests.flows.test_faults import MAX_BYTES, ODD, REAL, Catalog, bad_catalog
from tests.processes import killed_alone_once_its_workers_run, left_running, serving
from tiefvision_core.annotations.repository import AnnotationDatabase, BoxRecord
from tiefvision_core.catalog.manifest import image_id_for, read_manifest
from tiefvision_core.locator.crops import CropDataset, read_dataset
from tiefvision_core.storage.layout import index_current
from tiefvision_core.storage.stores import Store
from tiefvision_core.storage.urls import open_store
from tiefvision_core.vector_index.versions import open_index

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BOXES = REAL / "ccp-dresses" / "boxes.csv"
#: Concurrent uploads of the flood, and the server's workers (at work at once; as many
#: again may wait, the rest are refused at once).
UPLOADS, SERVE_WORKERS = 16, 2


@dataclass
class Done:
    """One finished command."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def ok(self) -> str:
        assert self.code == 0, (
            f"{self.args}: exit {self.code}\n{self.err[-3000:]}{self.out[-1500:]}"
        )
        return self.out

    def json(self) -> Any:
        return json.loads(self.ok())

    def one_line_error(self) -> str:
        """A user error: exit code 2 and one line on stderr, no traceback."""
        assert self.code == 2, f"{self.args}: exit {self.code}\n{self.err[-3000:]}"
        lines = [line for line in self.err.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in self.err, self.err[-3000:]
        return lines[0]


class Cli:
    """``tiefvision`` as a user runs it: one process per command, in its own session."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "tiefvision_cli.main", *args],
            env={**self.env, **env},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def __call__(self, *args: str, **env: str) -> Done:
        started = time.monotonic()
        process = self.start(*args, **env)
        try:
            out, err = process.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
        print(f"{args[0]}: exit {process.returncode} in {time.monotonic() - started:.1f} s")
        return Done(args, process.returncode, out, err)


@dataclass
class World:
    """The catalog, the store and the annotations of the scenario, as its steps change it."""

    catalog: Catalog
    store: Store
    database: str
    cli: Cli

    def reindex(self) -> dict[str, Any]:
        images = str(self.catalog.root)
        return self.cli("reindex", "--images", images, "--lock-ttl", "5", "--json").json()

    @property
    def good_ids(self) -> set[str]:
        return {image_id_for(path) for path in self.catalog.good}

    def sha256(self, image_id: str) -> str:
        manifest = read_manifest(self.store)
        assert manifest is not None
        [sha] = [
            row["sha256"]
            for row in manifest.to_pylist()
            if row["image_id"] == image_id and row["status"] == "ok"
        ]
        return sha

    def box(self, image_id: str) -> BoxRecord | None:
        with AnnotationDatabase(self.database) as annotations:
            return annotations.get_box(image_id)

    def assert_indexed_once(self) -> None:
        """The live index holds every good photo exactly once, and nothing else."""
        counts = Counter(open_index(self.store, "unsupervised").ids["image_id"])
        assert set(counts) == self.good_ids, (
            set(counts) ^ self.good_ids,
            self.catalog.good,
        )
        assert set(counts.values()) == {1}, [i for i, n in counts.items() if n > 1]


def _boxes_csv(path: Path) -> dict[str, tuple[int, int, int, int]]:
    """The dresses' hand-drawn boxes as ``import-boxes`` reads them (paths in the catalog)."""
    with open(BOXES, newline="") as source:
        rows = list(csv.DictReader(source))
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["image", "left", "top", "right", "bottom"])
        writer.writeheader()
        writer.writerows({**row, "image": f"ccp-dresses/{row['image']}"} for row in rows)
    return {
        image_id_for(f"ccp-dresses/{row['image']}"): (
            int(row["left"]),
            int(row["top"]),
            int(row["right"]),
            int(row["bottom"]),
        )
        for row in rows
    }


def _mirrored(source: Path, target: Path) -> None:
    """Another picture of the same size: the photo mirrored (new bytes)."""
    with Image.open(source) as photo:
        photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target, "JPEG", quality=90)


def _crops_images(store: Store, run: dict[str, Any]) -> tuple[CropDataset, set[str]]:
    """The crops dataset a ``train-locator --json`` run trained on, and its photos."""
    dataset = read_dataset(store, run["dataset_id"])
    work = store.read_parquet(f"{dataset.prefix}_work.parquet", ["image_id"])
    return dataset, set(work["image_id"].to_pylist())


def _get(base: str, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"{base}{path}", timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_faults_and_abuse_end_to_end(tmp_path: Path) -> None:
    catalog = bad_catalog(tmp_path / "catalog")
    store_url = (tmp_path / "store").as_uri()
    database = f"sqlite:///{tmp_path / 'annotations.sqlite'}"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("TIEFVISION_", "AWS_"))}
    cli = Cli(
        {
            **inherited,
            "PREFECT_API_URL": harness_api_url(),
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "TIEFVISION_STORE_URL": store_url,
            "TIEFVISION_DATABASE_URL": database,
            "TIEFVISION_MAX_IMAGE_BYTES": str(MAX_BYTES),
            "TIEFVISION_DEVICE": "cpu",
            "TIEFVISION_BATCH_SIZE": "4",
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
        }
    )
    world = World(catalog, open_store(store_url), database, cli)
    root = str(catalog.root)
    dresses = catalog.root / "ccp-dresses"

    # 1. A live index from scratch; rejects carry their reasons.
    ingested = cli("ingest", "--images", root, "--json").json()
    manifest = {row["rel_path"]: row for row in read_manifest(world.store).to_pylist()}
    assert {p for p, row in manifest.items() if row["status"] == "ok"} == catalog.good
    reasons = {p: row["reason"] for p, row in manifest.items() if row["status"] == "rejected"}
    assert reasons == catalog.bad and len(set(reasons.values())) > 5, ingested
    drawn = _boxes_csv(tmp_path / "boxes.csv")
    imported = cli("import-boxes", str(tmp_path / "boxes.csv"), "--json").json()
    assert (imported["imported"], imported["refused"]) == (len(drawn), []), imported
    train = ("train-locator", "--max-epochs", "2", "--min-images", "4", "--json")
    first_locator = cli(*train).json()
    dataset, trained_on = _crops_images(world.store, first_locator)
    assert trained_on == set(drawn) and dataset.images["stale"] == 0, dataset.images
    built = world.reindex()
    assert built["locator_version"] == first_locator["version"] and built["located"] > 0
    assert built["images"] == len(catalog.good)
    world.assert_indexed_once()

    # 2. Item 6: a reindex killed alone (kill -9 PID, the OOM killer) leaves no process.
    added = ("0014.jpg", "0023.jpg", "0025.jpg")
    for name in added:
        _mirrored(dresses / name, dresses / f"mirrored-{name}")
        catalog.good.add(f"ccp-dresses/mirrored-{name}")
    shutil.copyfile(ODD / "progressive.jpg", catalog.root / "odd" / "progressive.jpg")
    catalog.good.add("odd/progressive.jpg")
    run = cli.start("reindex", "--images", root, "--lock-ttl", "5", "--json")
    with killed_alone_once_its_workers_run(run) as started:
        print(f"reindex: SIGKILL with {len(started)} processes below it")
        left = left_running(started, within=10)
        assert not left, [started[pid][:100] for pid in left]
    resumed = world.reindex()
    assert resumed["images"] == len(catalog.good), resumed
    world.assert_indexed_once()

    # 3. Item 2: a renamed photo keeps its hand-imported box; nothing is located or encoded.
    old_id = image_id_for("ccp-dresses/0010.jpg")
    new_id = image_id_for("ccp-dresses/renamed-0010.jpg")
    boxed = world.box(old_id)
    assert boxed is not None and tuple(boxed.box) == drawn[old_id]
    assert not boxed.stale(world.sha256(old_id)) and world.box(new_id) is None
    (dresses / "0010.jpg").rename(dresses / "renamed-0010.jpg")
    catalog.good.remove("ccp-dresses/0010.jpg")
    catalog.good.add("ccp-dresses/renamed-0010.jpg")
    renamed = world.reindex()
    assert (renamed["new"], renamed["removed"], renamed["changed"]) == (1, 1, 0), renamed
    assert (renamed["located"], renamed["encoded"]) == (0, 0), renamed
    followed = world.box(new_id)
    assert world.box(old_id) is None and followed is not None
    assert tuple(followed.box) == drawn[old_id] and not followed.stale(world.sha256(new_id))
    world.assert_indexed_once()

    # 4. Item 3: a boxed photo's bytes replaced by another picture: its box is stale, and
    # the locator is trained without it.
    replaced_id = image_id_for("ccp-dresses/0005.jpg")
    fresh = world.box(replaced_id)
    assert fresh is not None and not fresh.stale(world.sha256(replaced_id))
    before_sha = world.sha256(replaced_id)
    _mirrored(REAL / "ccp-dresses" / "0005.jpg", dresses / "0005.jpg")
    replaced = world.reindex()
    assert (replaced["new"], replaced["removed"], replaced["changed"]) == (0, 0, 1), replaced
    assert replaced["encoded"] == 1, replaced  # the new bytes only
    stale = world.box(replaced_id)
    assert stale is not None and tuple(stale.box) == drawn[replaced_id]
    assert world.sha256(replaced_id) != before_sha and stale.stale(world.sha256(replaced_id))
    second_locator = cli(*train).json()
    dataset, trained_on = _crops_images(world.store, second_locator)
    assert dataset.images["stale"] == 1, dataset.images
    assert dataset.images["train"] + dataset.images["test"] == len(drawn) - 1, dataset.images
    assert trained_on == set(drawn) - {old_id, replaced_id} | {new_id}, trained_on
    world.assert_indexed_once()

    # 5. Item 1: removed photos never come back, whichever index version is live.
    gone_paths = sorted(p for p in catalog.good if p.startswith("grocery-packages/"))[:2]
    gone_paths += ["odd/cmyk.jpg", "ccp-dresses/mirrored-0014.jpg"]
    for path in gone_paths:
        (catalog.root / path).unlink()
        catalog.good.remove(path)
    removed_ids = {image_id_for(path) for path in gone_paths}
    gone = removed_ids | {old_id}  # and the id the renamed photo had
    removed = world.reindex()
    assert removed["removed"] == len(gone_paths) and removed["images"] == len(catalog.good)
    world.assert_indexed_once()
    [update] = [u for u in removed["indexes"] if u["space"] == "unsupervised"]
    older = update["before"]
    assert older and update["after"] != older
    assert world.store.read_pointer(index_current("unsupervised")) == update["after"]
    assert removed_ids <= set(open_index(world.store, "unsupervised", older).ids["image_id"])
    used = cli("index", "use", older, "--json").json()
    assert used["before"] == update["after"]
    assert world.store.read_pointer(index_current("unsupervised")) == older
    query = image_id_for("ccp-dresses/0014.jpg")
    answer = cli("search", "--id", query, "-k", "100", "--json").json()
    assert answer["index_version"] == older
    hits = {hit["image_id"] for hit in answer["results"]}
    assert hits == world.good_ids - {query}, (hits & gone, world.good_ids - hits)
    for asked in sorted(removed_ids):  # in the live version, out of the catalog
        line = cli("search", "--id", asked).one_line_error()
        assert f"image id '{asked}' is not in the catalog any more" in line, line
    line = cli("search", "--id", old_id).one_line_error()  # in neither
    assert f"image id '{old_id}' is not in the unsupervised index" in line, line

    # 6. Item 4: one pixel limit for a photo searched or located from a file.
    photo = dresses / "0014.jpg"
    with Image.open(photo) as opened:
        pixels = opened.width * opened.height
    for command in ("locate", "search"):
        below_limit = {"TIEFVISION_MAX_IMAGE_PIXELS": str(pixels - 1)}
        line = cli(command, str(photo), "--json", **below_limit).one_line_error()
        assert f"{pixels - 1:,}" in line and "TIEFVISION_MAX_IMAGE_PIXELS" in line, line
    above_limit = {"TIEFVISION_MAX_IMAGE_PIXELS": str(pixels)}
    left, top, right, bottom = cli("locate", str(photo), "--json", **above_limit).json()["box"]
    assert 0 <= left < right <= opened.width and 0 <= top < bottom <= opened.height
    found = cli("search", str(photo), "-k", "100", "--json", **above_limit).json()
    assert found["index_version"] == older
    assert {hit["image_id"] for hit in found["results"]} == world.good_ids

    # 7. Item 5: a flood of large uploads is bounded, health answers, removed stays removed.
    large = photo_jpeg(16)  # 4899×3266: a camera's
    serve_env = {k: v for k, v in cli.env.items() if k != "TIEFVISION_MAX_IMAGE_BYTES"}
    serve_env["TIEFVISION_WORKERS"] = str(SERVE_WORKERS)
    with serving([], serve_env, tmp_path / "serve.log") as (base, pid):
        warm = upload(f"{base}/api/search?k=3", large)  # loads torch and the encoder
        assert warm[0] == 200, warm
        watch = Watch(base, pid)
        results: list[tuple[int, str | None, float]] = []
        barrier = threading.Barrier(UPLOADS)

        def one() -> None:
            barrier.wait()
            results.append(upload(f"{base}/api/search?k=3", large, timeout=120))

        threads = [threading.Thread(target=one) for _ in range(UPLOADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(0.3)  # one more health answer after the last upload
        watch.stop()
        codes = Counter(code for code, _, _ in results)
        assert set(codes) <= {200, 503} and sum(codes.values()) == UPLOADS, codes
        assert codes[200] >= SERVE_WORKERS and codes[503] >= UPLOADS - 4 * SERVE_WORKERS, codes
        assert all(retry and int(retry) >= 1 for code, retry, _ in results if code == 503)
        assert len(watch.health) >= 3 and max(watch.health) < 2.0, watch.health

        status, answer = _get(base, f"/api/search?id={query}&k=100")
        assert status == 200 and answer["index_version"] == older, answer
        assert {hit["image_id"] for hit in answer["results"]} == world.good_ids - {query}
        for asked in sorted(gone):
            assert _get(base, f"/api/search?id={asked}")[0] == 404, asked
        status, shown = _get(base, f"/api/boxes/{new_id}")
        assert status == 200 and tuple(shown["box"]) == drawn[old_id] and not shown["stale"]
        status, shown = _get(base, f"/api/boxes/{replaced_id}")
        assert status == 200 and tuple(shown["box"]) == drawn[replaced_id] and shown["stale"]
