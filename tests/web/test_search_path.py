"""The web path of a search (issue 31, item 4): an upload is decoded once, within the
configured pixel limit, and that decoded photo is what the search encodes; the supervised
space's projection is read once per model version, not per upload, and a new version is
picked up; search by id and by photo are one module's public API, the one the web service
and the CLI import."""

from __future__ import annotations

import ast
import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.core.index.test_models import save_projection
from tiefvision_core.catalog import imaging
from tiefvision_core.config import load_settings
from tiefvision_core.index import models
from tiefvision_core.index.spaces import rebuild_space
from tiefvision_core.storage.urls import open_store
from tiefvision_web import create_app

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
LIMIT = 3_000_000  # configured: below the built-in 80 MP and Pillow's own 89 MP


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "MODELS", models.ModelCache())


def _jpeg(size: tuple[int, int] = (600, 800)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 90)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _upload(client: TestClient, data: bytes, space: str = "unsupervised"):
    files = {"image": ("photo.jpg", data, "image/jpeg")}
    return client.post("/api/search", params={"k": 3, "space": space}, files=files)


def test_an_upload_is_decoded_once_within_the_configured_limit(
    indexed_catalog, tmp_path, lite0, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every byte is decoded once (``imaging._load``: the pixels of an inspect or a decode),
    and each look at its header applies the configured limit, not a library default."""
    limits: list[int] = []
    loads: list[int] = []
    real_open, real_load = imaging._open, imaging._load

    def opened(data: bytes, max_pixels: int):
        limits.append(max_pixels)
        return real_open(data, max_pixels)

    def loaded(image, data: bytes, max_pixels: int) -> None:
        loads.append(max_pixels)
        real_load(image, data, max_pixels)

    monkeypatch.setattr(imaging, "_open", opened)
    monkeypatch.setattr(imaging, "_load", loaded)
    settings = indexed_catalog.settings(tmp_path / "a.sqlite", max_image_pixels=LIMIT)
    client = TestClient(create_app(settings, encoder=lite0))
    answer = _upload(client, _jpeg())
    assert answer.status_code == 200, answer.text
    assert (answer.json()["query_width"], answer.json()["query_height"]) == (600, 800)
    assert loads == [LIMIT] and limits == [LIMIT]
    # Over the configured limit, under every library default: refused from the header.
    limits.clear()
    loads.clear()
    answer = _upload(client, _jpeg((2000, 1600)))
    assert answer.status_code == 413 and f"{LIMIT:,}" in answer.json()["detail"]
    assert limits == [LIMIT] and loads == []


@pytest.fixture
def supervised_store(indexed_catalog, tmp_path: Path, lite0) -> str:
    """A copy of the web tests' store with a similarity model and its supervised index."""
    root = tmp_path / "store"
    shutil.copytree(indexed_catalog.root / "store", root)
    store = open_store(root.as_uri())
    save_projection(store, "sim-1", 2.0, encoder_version=lite0.version, channels=lite0.channels)
    _built_elsewhere(lambda: rebuild_space(store, lite0, "supervised", gate=None))
    return root.as_uri()


def _built_elsewhere(build: Callable[[], T]) -> T:
    """``build`` as another process (the rebuild-index flow) runs it: with its own models."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "MODELS", models.ModelCache())
        return build()


def test_supervised_uploads_read_the_projection_once_per_version(
    supervised_store, tmp_path, lite0
) -> None:
    """Before: the projection's weights were read from storage for every upload."""
    settings = load_settings(
        store_url=supervised_store, database_url=f"sqlite:///{tmp_path / 'a.sqlite'}"
    )
    app = create_app(settings, reload_interval=0.0, encoder=lite0)
    client = TestClient(app)
    store = app.state.web.store
    reads: list[str] = []
    real = store.get_bytes

    def counted(key: str) -> bytes:
        reads.append(key)
        return real(key)

    store.get_bytes = counted
    weights = lambda: [k for k in reads if k.endswith("weights.pt")]  # noqa: E731
    first = _upload(client, _jpeg(), "supervised")
    second = _upload(client, _jpeg(), "supervised")
    assert first.status_code == second.status_code == 200, first.text
    assert first.json() == second.json() and first.json()["space"] == "supervised"
    assert weights() == ["models/similarity/sim-1/weights.pt"]

    # A new model and the supervised index built through it: the next upload uses it.
    save_projection(
        open_store(supervised_store),
        "sim-2",
        3.0,
        encoder_version=lite0.version,
        channels=lite0.channels,
    )
    newer = _built_elsewhere(
        lambda: rebuild_space(open_store(supervised_store), lite0, "supervised", gate=None)
    )
    for _ in range(2):
        answer = _upload(client, _jpeg(), "supervised")
        assert answer.status_code == 200 and answer.json()["index_version"] == newer.version
    assert weights() == [
        "models/similarity/sim-1/weights.pt",
        "models/similarity/sim-2/weights.pt",
    ]


# -- one search API -------------------------------------------------------------------------
def _imports(path: Path) -> list[ast.ImportFrom]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]


def _sources(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def test_the_web_service_and_the_cli_search_through_one_module() -> None:
    """Search by id and by photo: both from ``tiefvision_core.index.search``, never from
    the module that happens to define the photo half."""
    offending = [
        f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}"
        for path in _sources("tiefvision_web", "tiefvision_cli")
        for node in _imports(path)
        if node.module == "tiefvision_core.index.photo_search"
    ]
    assert not offending, "\n".join(offending)


def test_no_private_name_crosses_a_module_on_the_search_path() -> None:
    offending = [
        f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name} from {node.module}"
        for path in _sources("tiefvision_web", "tiefvision_core/index", "tiefvision_cli")
        for node in _imports(path)
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert not offending, "\n".join(offending)
