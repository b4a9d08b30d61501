"""What the server keeps per indexed photo (bench/serve_memory.py measures it at scale)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tiefvision_core.storage.stores import LocalStore
from tiefvision_core.vector_index.publish import publish_index
from tiefvision_core.vector_index.versions import open_index


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve-memory") / "store"
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = pd.DataFrame(
        {
            "image_id": [f"photo-{i:04d}" for i in range(300)],
            "sha256": ["0" * 64] * 300,
            "box": [[0, 0, 10, 10]] * 300,
        }
    )
    publish_index(LocalStore(root), "unsupervised", vectors, ids, grid=(1, 1, 64), source={})
    return root


def test_row_lookup_shares_the_id_column_strings(store_root: Path):
    """The id → row map used to hold its own copy of every id string (~85 bytes a photo)."""
    opened = open_index(LocalStore(store_root, create=False), "unsupervised")
    column = opened.column("image_id")
    assert opened.row_of("photo-0123") == 123
    assert all(key is image_id for key, image_id in zip(opened._rows, column, strict=True))
