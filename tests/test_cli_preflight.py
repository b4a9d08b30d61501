"""The checks a command runs before its flow (``tiefvision_cli.preflight``): in one fixed
order, only those asked for, and without torch unless the device or encoder is asked for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tiefvision_cli.preflight import preflight
from tiefvision_core.errors import ConfigError, InputError, TiefVisionError
from tiefvision_core.vector_index.kinds import INDEX_KIND_CHOICES, check_index_kind


def test_the_source_is_checked_before_the_store_and_the_metadata(tmp_path: Path) -> None:
    metadata = tmp_path / "products.csv"
    metadata.write_text("sku,colour\n1,red\n")  # no image column: refused when read
    store = tmp_path / "store"
    with pytest.raises(TiefVisionError, match="does not exist") as error:
        preflight(store=str(store), images=str(tmp_path / "nope"), metadata=metadata)
    assert "nope" in str(error.value)
    assert not store.exists()  # failed before the store was opened (and created)
    with pytest.raises(InputError):
        preflight(store=str(store), images=str(tmp_path), metadata=metadata)


def test_only_what_is_asked_for_is_built(tmp_path: Path) -> None:
    checked = preflight(store=str(tmp_path / "s"))
    assert checked.store is not None and checked.settings.store_url.endswith("/s")
    assert checked.device is None and checked.encoder is None


def test_store_checks_never_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from tiefvision_cli.preflight import preflight; "
        f"preflight(store={str(tmp_path / 's')!r}); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_index_kinds_are_checked_against_the_one_declaration() -> None:
    assert [check_index_kind(kind) for kind in INDEX_KIND_CHOICES] == list(INDEX_KIND_CHOICES)
    with pytest.raises(ConfigError, match=r"--index-kind 'annoy': choose auto, exact, hnsw or"):
        check_index_kind("annoy")


def test_a_missing_database_url_is_reported_before_the_store_is_opened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Configuration only, so it comes first: an S3 store without a database URL is refused
    # before any S3 request (here one that would fail for want of credentials).
    for name in ("TIEFVISION_DATABASE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(TiefVisionError, match="TIEFVISION_DATABASE_URL"):
        preflight(store="s3://bucket/prefix", check_database=True)
