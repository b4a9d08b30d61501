"""The ingest flow under a real (temporary) Prefect server, on both storage backends."""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import DATA, S3Server
from tiefvision_core.catalog.manifest import read_manifest, read_rejects
from tiefvision_core.catalog.synthetic import generate_catalog
from tiefvision_core.storage.urls import open_store

pytestmark = pytest.mark.usefixtures("prefect_harness")

BAD = DATA / "images" / "bad"


def _expected_rejects() -> dict[str, str]:
    with open(BAD / "EXPECTED.csv", newline="") as handle:
        return {f"bad/{row['file']}": row["reason"] for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic catalog with the bad-file corpus mixed in."""
    root = tmp_path_factory.mktemp("catalog")
    generate_catalog(root, products=5, views=2, seed=3)
    shutil.copytree(BAD, root / "images" / "bad", ignore=shutil.ignore_patterns("*.csv"))
    return root


def _copy(catalog_dir: Path, tmp_path: Path) -> Path:
    images = tmp_path / "images"
    shutil.copytree(catalog_dir / "images", images)
    return images


def test_ingest_publishes_manifest_rejects_and_artifact(catalog_dir, store_url, tmp_path) -> None:
    from flows.ingest import ingest

    images = _copy(catalog_dir, tmp_path)
    summary = ingest(
        images=str(images), store=store_url, metadata=str(catalog_dir / "products.csv")
    )
    expected = _expected_rejects()
    assert summary.images == 10 and summary.new == 10
    assert summary.rejected == len(expected) == summary.rejects_total
    store = open_store(store_url)
    rejects = {r["rel_path"]: r["reason"] for r in read_rejects(store).to_pylist()}
    assert rejects == expected
    manifest = read_manifest(store).to_pandas()
    ok = manifest[manifest["status"] == "ok"]
    assert ok["product_id"].notna().all() and ok["product_id"].nunique() == 5
    assert set(ok["format"]) == {"JPEG"}

    from prefect.artifacts import Artifact

    artifact = Artifact.get("ingest-summary")  # the latest version of the keyed artifact
    assert artifact is not None and summary.version in (artifact.description or "")
    table = {row["measure"]: row["value"] for row in json.loads(artifact.data)}
    assert table["rejected"] == len(expected) and table["images"] == 10


def test_incremental_rerun_delete_and_corrupt(catalog_dir, store_url, tmp_path) -> None:
    from flows.ingest import ingest

    images = _copy(catalog_dir, tmp_path)
    ingest(images=str(images), store=store_url)
    again = ingest(images=str(images), store=store_url)
    assert (again.new, again.changed, again.removed, again.rejected) == (0, 0, 0, 0)

    victims = sorted(p for p in images.rglob("view-*.jpg"))
    victims[0].unlink()
    victims[1].write_bytes(b"<html>not a photo any more</html>")
    after = ingest(images=str(images), store=store_url)
    assert (after.new, after.changed, after.removed, after.rejected) == (0, 0, 1, 1)
    rows = {r["rel_path"]: r for r in read_manifest(open_store(store_url)).to_pylist()}
    changed_path = victims[1].relative_to(images).as_posix()
    assert rows[changed_path]["reason"] == "not_an_image"


@pytest.mark.s3
def test_ingest_from_an_s3_prefix(catalog_dir, s3_env: S3Server, tmp_path) -> None:
    from flows.ingest import ingest

    source = open_store(f"s3://{s3_env.new_bucket()}/photos")
    for path in sorted((catalog_dir / "images").rglob("*")):
        if path.is_file():
            source.put_bytes(path.relative_to(catalog_dir / "images").as_posix(), path.read_bytes())
    summary = ingest(images=source.uri(), store=(tmp_path / "store").as_uri())
    assert summary.images == 10 and summary.rejected == len(_expected_rejects())
    manifest = read_manifest(open_store((tmp_path / "store").as_uri()))
    assert all(uri.startswith(source.uri()) for uri in manifest.column("source_uri").to_pylist())


@pytest.mark.s3
@pytest.mark.slow
def test_s3_restart_mid_ingest_then_rerun_is_correct(s3_env: S3Server, tmp_path) -> None:
    from flows.ingest import ingest

    images = tmp_path / "catalog"
    generate_catalog(images, products=20, views=3, seed=5)
    reference = ingest(images=str(images / "images"), store=(tmp_path / "ref").as_uri())
    store_url = f"s3://{s3_env.new_bucket()}/store"

    staged = s3_env.root / store_url.removeprefix("s3://") / "catalog" / "staging"

    def restart_when_work_started() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (staged.exists() and any(staged.iterdir())):
            time.sleep(0.01)
        s3_env.restart(down_seconds=2.0)

    restarter = threading.Thread(target=restart_when_work_started)
    restarter.start()
    # Either outcome of the disturbed run is acceptable; the rerun must be correct.
    with contextlib.suppress(Exception):
        ingest(images=str(images / "images"), store=store_url, chunk_size=4)
    restarter.join()
    rerun = ingest(images=str(images / "images"), store=store_url, chunk_size=4)
    assert rerun.images == reference.images == 60 and rerun.rejects_total == 0
    got = {r["rel_path"]: r["sha256"] for r in read_manifest(open_store(store_url)).to_pylist()}
    ref = read_manifest(open_store((tmp_path / "ref").as_uri())).to_pylist()
    assert got == {r["rel_path"]: r["sha256"] for r in ref}


def test_cli_ingest_of_a_folder_with_special_files_finishes_with_a_reject_each(
    catalog_dir, tmp_path
) -> None:
    """A FIFO, a looping link, /dev/zero, a link out, a dangling link, an oversized file and
    hidden entries: the CLI finishes (a FIFO once hung it past SIGTERM) and says why."""
    import os
    import subprocess
    import sys

    from tests.conftest import harness_api_url

    images = _copy(catalog_dir, tmp_path)
    special = images / "special"
    special.mkdir()
    os.mkfifo(special / "fifo.jpg")
    os.symlink("loop.jpg", special / "loop.jpg")
    os.symlink("/dev/zero", special / "zero.jpg")
    os.symlink(catalog_dir / "products.csv", special / "passwd.jpg")
    os.symlink("gone.jpg", special / "dangling.jpg")
    (special / "big.jpg").write_bytes(bytes(64 * 1024 + 1))
    (special / ".DS_Store").write_bytes(b"\0" * 16)
    store_url = (tmp_path / "store").as_uri()
    env = {
        **os.environ,
        "PREFECT_API_URL": harness_api_url(),
        "TIEFVISION_MAX_IMAGE_BYTES": str(64 * 1024),
    }
    command = [sys.executable, "-m", "tiefvision_cli.main", "ingest", "--images", str(images)]

    def run_cli(*flags: str) -> dict:
        try:
            done = subprocess.run(
                [*command, "--store", store_url, "--json", *flags],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,  # a hung ingest is killed (SIGKILL) and fails the test
            )
        finally:
            os.close(os.open(special / "fifo.jpg", os.O_RDWR | os.O_NONBLOCK))  # free a reader
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    summary = run_cli()
    special_rejects = {
        "special/fifo.jpg": "not_a_regular_file",
        "special/loop.jpg": "unreadable",
        "special/zero.jpg": "outside_source",
        "special/passwd.jpg": "outside_source",
        "special/dangling.jpg": "vanished",
        "special/big.jpg": "too_large",
    }
    rejects = {r["rel_path"]: r["reason"] for r in read_rejects(open_store(store_url)).to_pylist()}
    assert rejects == {**_expected_rejects(), **special_rejects}
    assert summary["images"] == summary["ok"] == 10
    assert summary["listed"] == 10 + len(rejects)
    assert summary["skipped_reasons"] == {"hidden": 1}

    # --follow-symlinks reaches the flow: the link out is read now, /dev/zero still never
    followed = run_cli("--follow-symlinks")
    rows = {r["rel_path"]: r for r in read_manifest(open_store(store_url)).to_pylist()}
    assert rows["special/passwd.jpg"]["reason"] == "not_an_image"  # it was read: a CSV
    assert rows["special/zero.jpg"]["reason"] == "not_a_regular_file"
    assert followed["rejected"] == 2 and followed["rejects_total"] == len(rejects)
