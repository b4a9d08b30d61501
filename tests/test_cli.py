"""The installed ``tiefvision`` command: its contract for scripts and schedulers."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli import CLI, one_line_error, run_cli


def test_missing_source_folder(tmp_path: Path) -> None:
    line = one_line_error(
        run_cli("ingest", "--images", str(tmp_path / "nope"), "--store", str(tmp_path / "s"))
    )
    assert "does not exist" in line and "nope" in line


def test_invalid_setting_names_it(tmp_path: Path) -> None:
    result = run_cli("ingest", "--images", str(tmp_path), env={"TIEFVISION_DEVICE": "gpu"})
    line = one_line_error(result)
    assert "TIEFVISION_DEVICE" in line and "cuda" in line


def test_unreachable_s3_endpoint_fails_fast(tmp_path: Path) -> None:
    env = {
        "TIEFVISION_S3_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "secret-never-shown",
    }
    result = run_cli("ingest", "--images", "s3://photos/x", "--store", str(tmp_path), env=env)
    line = one_line_error(result)
    assert "cannot reach" in line and "secret-never-shown" not in result.stderr


def test_metadata_without_key_column(tmp_path: Path) -> None:
    meta = tmp_path / "meta.csv"
    meta.write_text("sku,product_id\n1,2\n")
    line = one_line_error(run_cli("ingest", "--images", str(tmp_path), "--metadata", str(meta)))
    assert "no key column" in line and "image" in line


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli("--debug", "ingest", "--images", str(tmp_path / "nope"))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_usage_error_exit_code(tmp_path: Path) -> None:
    result = run_cli("synth")
    assert result.returncode == 2 and "--out" in result.stderr


@pytest.mark.slow
def test_synth_then_ingest_json(tmp_path: Path) -> None:
    out = tmp_path / "cat"
    assert run_cli("synth", "--out", str(out), "--products", "3", "--views", "2").returncode == 0
    assert len(list((out / "images").rglob("*.jpg"))) == 6
    store = (tmp_path / "store").as_uri()
    args = ("ingest", "--images", str(out / "images"), "--store", store, "--json")
    first = run_cli(*args, "--metadata", str(out / "products.csv"))
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["images"], summary["new"], summary["rejected"]) == (6, 6, 0)
    second = json.loads(run_cli(*args).stdout)
    assert (second["new"], second["changed"], second["unchanged"]) == (0, 0, 6)


@pytest.mark.slow
def test_demo_prints_summary_and_where_output_is(tmp_path: Path) -> None:
    result = run_cli("demo", "--workdir", str(tmp_path / "demo"), "--products", "4", "--views", "2")
    assert result.returncode == 0, result.stderr
    assert "images (usable)" in result.stdout and "Manifest:" in result.stdout
    assert (tmp_path / "demo" / "store" / "catalog" / "manifest" / "CURRENT").is_file()
    # Too small for the locator and Deep Ranking: both say so, search still runs.
    assert "Locator skipped" in result.stdout and "Deep Ranking skipped" in result.stdout
    assert "Pipeline stages: ingest" in result.stdout
    assert "mAP@10" in result.stdout
    # The evaluate table closes the demo: no locator to score, the index scored by product.
    assert "Quality of what is live" in result.stdout and "retrieval: unsupervised" in result.stdout
    assert "skipped: no locator yet" in result.stdout
    report = (tmp_path / "demo" / "search-report.html").read_text()
    assert report.count("<tr>") == 8 and "data:image/jpeg;base64," in report
    _printed_web_ui_serves_the_demo(result.stdout, images=8)


def _printed_web_ui_serves_the_demo(stdout: str, images: int) -> None:
    """The demo's "Web UI:" line names a ``tiefvision serve`` command and a URL: that
    command (on a free port here) serves the demo catalog and its search."""
    import httpx

    from tests.conftest import free_port

    (line,) = [text for text in stdout.splitlines() if text.startswith("Web UI: ")]
    command, _, url = line.removeprefix("Web UI: ").partition("  then open ")
    args = shlex.split(command)
    assert args[:2] == ["tiefvision", "serve"] and url == "http://127.0.0.1:8000/"
    port = free_port()
    server = subprocess.Popen(
        [CLI, *args[1:], "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read().decode()
            try:
                if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "tiefvision serve did not answer in 60 s"
            time.sleep(0.2)
        listing = httpx.get(base + "/api/images", params={"per_page": 50}).json()
        assert listing["total"] == images
        first = listing["images"][0]["image_id"]
        found = httpx.get(base + "/api/search", params={"id": first, "k": 3}).json()
        assert len(found["results"]) == 3 and first not in {r["image_id"] for r in found["results"]}
        assert httpx.get(base + "/").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_demo_on_your_own_photos_indexes_them_without_product_ids(tmp_path: Path) -> None:
    from tiefvision_core.catalog.manifest import image_id_for
    from tiefvision_core.catalog.synthetic import generate_catalog

    generate_catalog(tmp_path / "mine", products=3, views=2, size=(120, 150))
    images = tmp_path / "mine" / "images"
    result = run_cli("demo", "--images", str(images), "--workdir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    assert "search uses whole photos" in result.stdout
    assert "retrieval scores skipped" in result.stdout
    report = (tmp_path / "demo" / "search-report.html").read_text()
    # Every one of the six photos is a query row, named by its image id.
    assert report.count("<tr>") == 6 and image_id_for("p0002/view-2.jpg") in report


@pytest.fixture
def ingested(tmp_path: Path) -> tuple[Path, str]:
    """A small synthetic catalog ingested into a local store: (catalog folder, store URL)."""
    from tiefvision_core.catalog.ingest import ingest_catalog
    from tiefvision_core.catalog.synthetic import generate_catalog
    from tiefvision_core.storage.stores import LocalStore

    out = tmp_path / "cat"
    generate_catalog(out, products=2, views=2, size=(120, 150))
    ingest_catalog(LocalStore(out / "images", create=False), LocalStore(tmp_path / "store"))
    return out, (tmp_path / "store").as_uri()


def test_import_boxes_reports_refused_lines(ingested: tuple[Path, str], tmp_path: Path) -> None:
    out, store = ingested
    boxes = tmp_path / "boxes.csv"
    boxes.write_text((out / "boxes.csv").read_text() + "p0009/view-1.jpg,1,1,5,5\n")
    result = run_cli("import-boxes", str(boxes), "--store", store, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["imported"], report["updated"], report["unchanged"]) == (4, 0, 0)
    assert [(r["line"], r["image"]) for r in report["refused"]] == [(6, "p0009/view-1.jpg")]
    assert (tmp_path / "store" / "annotations.sqlite").is_file()

    again = run_cli("import-boxes", str(boxes), "--store", store)
    assert again.returncode == 0, again.stderr
    assert "0 imported, 0 updated, 4 unchanged, 1 refused" in again.stdout
    assert "p0009/view-1.jpg" in again.stdout and "unknown image" in again.stdout
    strict = run_cli("import-boxes", str(boxes), "--store", store, "--strict")
    assert strict.returncode == 1


def test_import_triplets_cli(ingested: tuple[Path, str], tmp_path: Path) -> None:
    _, store = ingested
    triplets = tmp_path / "t.csv"
    triplets.write_text(
        "reference,positive,negative\np0000/view-1.jpg,p0000/view-2.jpg,p0001/view-1.jpg\n"
    )
    result = run_cli("import-triplets", str(triplets), "--store", store, "--json")
    assert result.returncode == 0, result.stderr
    assert (json.loads(result.stdout)["imported"], json.loads(result.stdout)["refused"]) == (1, [])


def test_import_errors_are_one_line(ingested: tuple[Path, str], tmp_path: Path) -> None:
    _, store = ingested
    bad = tmp_path / "bad.csv"
    bad.write_text("image,left,top\nx,1,2\n")
    line = one_line_error(run_cli("import-boxes", str(bad), "--store", store))
    assert "image,left,top,right,bottom" in line
    line = one_line_error(run_cli("import-boxes", str(tmp_path / "nope.csv"), "--store", store))
    assert "does not exist" in line
    empty = (tmp_path / "empty-store").as_uri()
    line = one_line_error(run_cli("import-triplets", str(bad), "--store", empty))
    assert "tiefvision ingest" in line
    line = one_line_error(run_cli("import-boxes", str(bad), "--store", "s3://bucket/prefix"))
    assert "TIEFVISION_DATABASE_URL" in line
    secret = "pw-Zq77-never-shown"
    database = f"postgresql+psycopg://tv:{secret}@127.0.0.1:9/tv"
    result = run_cli("import-boxes", str(bad), "--store", store, "--database", database)
    line = one_line_error(result)
    assert "cannot open the annotations database" in line and secret not in result.stderr


def test_an_unexpected_error_is_one_line_naming_the_stage_and_the_exception_type(
    tmp_path: Path,
) -> None:
    """A corrupt manifest is nothing the CLI checks for: pyarrow raises deep inside the
    encode flow. The user gets the command, our stage and the exception type — never
    pyarrow's own words — and exit code 1; ``--debug`` shows the traceback."""
    store = tmp_path / "store"
    (store / "catalog" / "manifest").mkdir(parents=True)
    (store / "catalog" / "manifest" / "CURRENT").write_text("v1")
    (store / "catalog" / "manifest" / "v1.parquet").write_bytes(b"not a parquet file")

    result = run_cli("encode", "--store", str(store))
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert "tiefvision encode failed" in line and "ArrowInvalid" in line
    assert "in tiefvision_core." in line and "--debug" in line
    assert "magic bytes" not in result.stderr and "Traceback" not in result.stderr

    debug = run_cli("--debug", "encode", "--store", str(store))
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "magic bytes" in debug.stderr


def test_encode_with_nothing_new_answers_without_prefect(
    ingested: tuple[Path, str], tmp_path: Path
) -> None:
    """A nightly ``encode`` that finds nothing new answers from its plan: no flow run, so no
    Prefect server to start or reach. Pointed at a Prefect API that does not exist, the
    first (real) run fails and the no-op one still answers."""
    from tiefvision_core.catalog.manifest import read_manifest
    from tiefvision_core.encoders import get_encoder
    from tiefvision_core.encoding.encode import encode_catalog
    from tiefvision_core.encoding.runtime import EncodingRuntime
    from tiefvision_core.storage.urls import open_store

    _, store = ingested
    nowhere = {"PREFECT_API_URL": "http://127.0.0.1:9/api", "PREFECT_HOME": str(tmp_path / "ph")}
    first = run_cli("encode", "--store", store, "--json", env=nowhere, timeout=120)
    assert first.returncode != 0  # there was work: the flow needs the (missing) server
    runtime = EncodingRuntime(get_encoder("efficientnet_lite0"), device="cpu", workers=0)
    encode_catalog(open_store(store), runtime)  # now everything is encoded

    again = run_cli("encode", "--store", store, "--json", env=nowhere, timeout=120)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    images = read_manifest(open_store(store)).num_rows
    assert (summary["encoded"], summary["already_encoded"], summary["images"]) == (0, 4, images)

    # With no Prefect server configured, the no-op neither starts a temporary one nor even
    # imports Prefect (reading its settings was half of a no-op's time).
    probe = (
        "import json, runpy, sys\n"
        f"sys.argv = ['tiefvision', 'encode', '--store', {store!r}, '--json']\n"
        "try:\n    runpy.run_module('tiefvision_cli.main', run_name='__main__')\n"
        "except SystemExit as done:\n    assert not done.code, done.code\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TIEFVISION_"))}
    env["PREFECT_HOME"] = str(tmp_path / "ph2")
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert json.loads(lines[-2])["encoded"] == 0
    assert json.loads(lines[-1]) == [], "a no-op encode imported Prefect"
