"""One pixel limit everywhere (issue 28, item 4): ``search FILE``, ``locate FILE`` and the
web upload decode within ``TIEFVISION_MAX_IMAGE_PIXELS``, as ingest does — a lowered limit
refuses a photo above it, a raised one accepts a photo above the built-in 80 MP.

The photos are flat one-colour JPEGs: an 81 MP one is about a megabyte, made in a second,
and (DCT-scaled) decoded at 1/8 by the query path, so the tests stay fast and small.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from tiefvision_core.catalog.imaging import DEFAULT_MAX_PIXELS
from tiefvision_core.errors import ImageRejected
from tiefvision_core.locator.model import LocatorHeads, TargetScaler, WindowGeometry
from tiefvision_core.locator.model_files import save_locator
from tiefvision_core.storage.urls import open_store
from tiefvision_web import create_app

ABOVE_DEFAULT = (9000, 9000)  # 81 MP > DEFAULT_MAX_PIXELS
LOWERED = 2_000_000
ABOVE_LOWERED = (1800, 1200)  # 2.16 MP: well within the built-in default


def _flat_jpeg(path: Path, size: tuple[int, int]) -> Path:
    Image.new("L", size, 128).save(path, "JPEG", quality=75)
    return path


@dataclass(frozen=True)
class Photos:
    large: Path  # above the built-in default
    medium: Path  # above the lowered limit only


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Photos:
    folder = tmp_path_factory.mktemp("pixel-limit")
    assert ABOVE_DEFAULT[0] * ABOVE_DEFAULT[1] > DEFAULT_MAX_PIXELS
    return Photos(
        _flat_jpeg(folder / "large.jpg", ABOVE_DEFAULT),
        _flat_jpeg(folder / "medium.jpg", ABOVE_LOWERED),
    )


@pytest.fixture(scope="module")
def located_store(indexed_catalog, tmp_path_factory: pytest.TempPathFactory, lite0) -> str:
    """A copy of the web tests' store with a locator for lite0 (untrained heads: any box
    will do, what is tested is that the photo gets that far)."""
    root = tmp_path_factory.mktemp("located") / "store"
    shutil.copytree(indexed_catalog.root / "store", root)
    torch.manual_seed(0)
    heads = LocatorHeads(lite0.geometry.channels, lite0.geometry.grid, reduced=4, hidden=6)
    save_locator(
        open_store(root.as_uri()),
        heads.eval(),
        TargetScaler((0.0, 0.0, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0)),
        geometry=WindowGeometry(32, 224, lite0.geometry.grid),
        scales=(448, 576),
        threshold=0.8,
        metadata={"encoder_version": lite0.version},
    )
    return root.as_uri()


def _cli(args: list[str], limit: int) -> object:
    from tiefvision_cli.main import app

    env = {"TIEFVISION_MAX_IMAGE_PIXELS": str(limit), "TIEFVISION_DEVICE": "cpu"}
    return CliRunner().invoke(app, args, env=env)


def _refused(result, limit: int) -> None:
    error = result.exception
    assert isinstance(error, ImageRejected), result.output
    assert error.reason == "too_many_pixels" and f"{limit:,}" in error.detail


@pytest.mark.parametrize("command", ["search", "locate"])
def test_cli_query_refuses_a_photo_above_a_lowered_limit(command, photos, located_store) -> None:
    result = _cli([command, str(photos.medium), "--store", located_store, "--json"], LOWERED)
    _refused(result, LOWERED)


def test_cli_search_accepts_a_photo_above_the_default_under_a_raised_limit(
    photos, located_store
) -> None:
    args = ["search", str(photos.large), "--store", located_store, "--json", "-k", "3"]
    result = _cli(args, 100_000_000)
    assert result.exit_code == 0, result.exception
    answer = json.loads(result.stdout)
    assert len(answer["results"]) == 3
    left, top, right, bottom = answer["query_box"]  # in the photo's own pixels
    assert 0 <= left < right <= ABOVE_DEFAULT[0] and 0 <= top < bottom <= ABOVE_DEFAULT[1]


def test_cli_locate_accepts_a_photo_above_the_default_under_a_raised_limit(
    photos, located_store
) -> None:
    result = _cli(["locate", str(photos.large), "--store", located_store, "--json"], 100_000_000)
    assert result.exit_code == 0, result.exception
    left, top, right, bottom = json.loads(result.stdout)["box"]
    assert 0 <= left < right <= ABOVE_DEFAULT[0] and 0 <= top < bottom <= ABOVE_DEFAULT[1]


def _upload(client: TestClient, photo: Path):
    files = {"image": ("photo.jpg", io.BytesIO(photo.read_bytes()), "image/jpeg")}
    return client.post("/api/search", params={"k": 3}, files=files)


def test_web_upload_follows_the_configured_limit(indexed_catalog, photos, tmp_path, lite0) -> None:
    lowered = indexed_catalog.settings(tmp_path / "a.sqlite", max_image_pixels=LOWERED)
    answer = _upload(TestClient(create_app(lowered, encoder=lite0)), photos.medium)
    assert answer.status_code == 413
    assert "too_many_pixels" in answer.json()["detail"] and f"{LOWERED:,}" in answer.text

    raised = indexed_catalog.settings(tmp_path / "b.sqlite", max_image_pixels=100_000_000)
    answer = _upload(TestClient(create_app(raised, encoder=lite0)), photos.large)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert (data["query_width"], data["query_height"]) == ABOVE_DEFAULT
    assert data["query_box"] == [0, 0, *ABOVE_DEFAULT] and len(data["results"]) == 3
