"""``tiefvision reindex``: wrong input stops it before any flow starts, in one line (the
runs themselves are tested in tests/flows/test_reindex_flow.py)."""

from __future__ import annotations

from pathlib import Path

from tests.cli import one_line_error, run_cli


def test_missing_source_folder_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(
        run_cli("reindex", "--images", str(tmp_path / "nope"), "--store", str(tmp_path / "s"))
    )
    assert "does not exist" in line and "nope" in line
    assert not (tmp_path / "s" / "locks").exists()  # failed before taking the lock


def test_unknown_index_kind_names_the_choices(tmp_path: Path) -> None:
    line = one_line_error(
        run_cli(
            "reindex",
            "--images",
            str(tmp_path),
            "--index-kind",
            "annoy",
            "--store",
            str(tmp_path / "s"),
        )
    )
    assert "--index-kind 'annoy'" in line and "exact, hnsw or ivfpq" in line


def test_bad_metadata_file_is_refused_before_the_run(tmp_path: Path) -> None:
    metadata = tmp_path / "products.csv"
    metadata.write_text("sku,colour\n1,red\n")
    line = one_line_error(
        run_cli(
            "reindex",
            "--images",
            str(tmp_path),
            "--metadata",
            str(metadata),
            "--store",
            str(tmp_path / "s"),
        )
    )
    assert "products.csv" in line
