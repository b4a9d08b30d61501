"""One small indexed catalog for the web tests (built once: encoding takes seconds), and a
web application over it with its own annotations database per test module."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tiefvision_core.catalog.ingest import ingest_catalog
from tiefvision_core.catalog.synthetic import generate_catalog
from tiefvision_core.config import Settings, load_settings
from tiefvision_core.encoding.encode import encode_catalog
from tiefvision_core.encoding.runtime import EncodingRuntime
from tiefvision_core.index.spaces import rebuild_space
from tiefvision_core.storage.stores import LocalStore
from tiefvision_core.storage.urls import open_store


@dataclass(frozen=True)
class IndexedCatalog:
    root: Path
    store_url: str
    photos: Path  # the ingested folder

    def settings(self, database: Path, **overrides: object) -> Settings:
        return load_settings(
            store_url=self.store_url, database_url=f"sqlite:///{database}", **overrides
        )


@pytest.fixture(scope="session")
def indexed_catalog(tmp_path_factory: pytest.TempPathFactory, lite0) -> IndexedCatalog:
    """6 products × 3 views, ingested with product ids, whole-photo crops encoded, and the
    unsupervised index built (exact): the same core calls the rebuild-index flow makes."""
    root = tmp_path_factory.mktemp("web")
    generate_catalog(root / "catalog", products=6, views=3, seed=11)
    store_url = (root / "store").as_uri()
    store = open_store(store_url)
    ingest_catalog(
        LocalStore(root / "catalog" / "images", create=False),
        store,
        metadata=root / "catalog" / "products.csv",
    )
    runtime = EncodingRuntime(lite0, device="cpu", batch_size=8, workers=0)
    encode_catalog(store, runtime, kind="box", shard_size=64, flips=True)
    rebuild_space(store, lite0, "unsupervised")
    return IndexedCatalog(root, store_url, root / "catalog" / "images")
