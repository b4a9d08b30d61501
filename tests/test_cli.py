"""The installed ``tiefvision`` command: its contract for scripts and schedulers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "tiefvision")


def _run(*args: str, env: dict[str, str] | None = None, timeout: int = 300):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TIEFVISION_", "AWS_"))}
    full_env.update(env or {})
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, env=full_env, timeout=timeout, check=False
    )


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_missing_source_folder(tmp_path: Path) -> None:
    line = _one_line_error(
        _run("ingest", "--images", str(tmp_path / "nope"), "--store", str(tmp_path / "s"))
    )
    assert "does not exist" in line and "nope" in line


def test_invalid_setting_names_it(tmp_path: Path) -> None:
    result = _run("ingest", "--images", str(tmp_path), env={"TIEFVISION_DEVICE": "gpu"})
    line = _one_line_error(result)
    assert "TIEFVISION_DEVICE" in line and "cuda" in line


def test_unreachable_s3_endpoint_fails_fast(tmp_path: Path) -> None:
    env = {
        "TIEFVISION_S3_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "secret-never-shown",
    }
    result = _run("ingest", "--images", "s3://photos/x", "--store", str(tmp_path), env=env)
    line = _one_line_error(result)
    assert "cannot reach" in line and "secret-never-shown" not in result.stderr


def test_metadata_without_key_column(tmp_path: Path) -> None:
    meta = tmp_path / "meta.csv"
    meta.write_text("sku,product_id\n1,2\n")
    line = _one_line_error(_run("ingest", "--images", str(tmp_path), "--metadata", str(meta)))
    assert "no key column" in line and "image" in line


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = _run("--debug", "ingest", "--images", str(tmp_path / "nope"))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_usage_error_exit_code(tmp_path: Path) -> None:
    result = _run("synth")
    assert result.returncode == 2 and "--out" in result.stderr


@pytest.mark.slow
def test_synth_then_ingest_json(tmp_path: Path) -> None:
    out = tmp_path / "cat"
    assert _run("synth", "--out", str(out), "--products", "3", "--views", "2").returncode == 0
    assert len(list((out / "images").rglob("*.jpg"))) == 6
    store = (tmp_path / "store").as_uri()
    args = ("ingest", "--images", str(out / "images"), "--store", store, "--json")
    first = _run(*args, "--metadata", str(out / "products.csv"))
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["images"], summary["new"], summary["rejected"]) == (6, 6, 0)
    second = json.loads(_run(*args).stdout)
    assert (second["new"], second["changed"], second["unchanged"]) == (0, 0, 6)


@pytest.mark.slow
def test_demo_prints_summary_and_where_output_is(tmp_path: Path) -> None:
    result = _run("demo", "--workdir", str(tmp_path / "demo"), "--products", "4", "--views", "2")
    assert result.returncode == 0, result.stderr
    assert "images (usable)" in result.stdout and "Manifest:" in result.stdout
    assert (tmp_path / "demo" / "store" / "catalog" / "manifest" / "CURRENT").is_file()
