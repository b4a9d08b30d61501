"""Queries from the command line are cold processes: they must never import (and so never
start) Prefect, a search by id must not even import torch, and the default encoder is built
without timm or torchvision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tiefvision_core.similarity.unsupervised import similarity_vectors
from tiefvision_core.storage.stores import LocalStore
from tiefvision_core.vector_index.publish import publish_index

#: Runs the CLI's ``main`` in this process, then reports which heavy packages it loaded.
_WRAPPER = textwrap.dedent(
    """
    import json, sys
    from tiefvision_cli.main import main
    sys.argv = ["tiefvision", *sys.argv[1:]]
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code or 0
    except BaseException as error:
        code = repr(error)
    torch = "torch" in sys.modules
    timm = "timm" in sys.modules or "torchvision" in sys.modules
    # The single-photo locate path, which `locate FILE` and `search FILE` share.
    import tiefvision_core.locator.locate  # noqa: F401
    prefect = any(name.split(".")[0] == "prefect" for name in sys.modules)
    report = {"code": code, "prefect": prefect, "torch": torch, "timm": timm}
    print(json.dumps(report), file=sys.stderr)
    """
)


@pytest.fixture(scope="module")
def store_with_index(lite0, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A local store holding one unsupervised index of lite0-shaped vectors (no locator: a
    photo query uses the whole photo), and a photo to query with."""
    root = tmp_path_factory.mktemp("cold")
    rows = 12
    maps = np.random.default_rng(3).normal(size=(rows, lite0.channels, 3, 3)).astype(np.float32)
    ids = pd.DataFrame(
        {
            "image_id": [f"img-{i:02d}" for i in range(rows)],
            "box": [[0, 0, 64, 64]] * rows,
            "row": np.arange(rows, dtype=np.int64),
        }
    )
    publish_index(
        LocalStore(root / "store"),
        "unsupervised",
        similarity_vectors(maps),
        ids,
        grid=(3, 3, lite0.channels),
        source={"encoder_version": lite0.version},
    )
    photo = root / "photo.jpg"
    Image.new("RGB", (180, 240), (200, 40, 90)).save(photo)
    return (root / "store").as_uri(), photo


def _query(args: list[str], tmp_path: Path) -> tuple[dict, dict]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("PREFECT_API_URL", None)  # even without a server to talk to, nothing is started
    done = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    last = (done.stderr.strip().splitlines() or [""])[-1]
    assert last.startswith("{"), done.stderr[-2000:]
    report = json.loads(last)
    assert report["code"] == 0, done.stderr[-2000:]
    return json.loads(done.stdout), report


def test_search_by_id_imports_neither_prefect_nor_torch(store_with_index, tmp_path: Path) -> None:
    store, _ = store_with_index
    answer, loaded = _query(["search", "--id", "img-03", "-k", "4", "--store", store], tmp_path)
    assert len(answer["results"]) == 4 and "img-03" not in {
        r["image_id"] for r in answer["results"]
    }
    assert loaded == {"code": 0, "prefect": False, "torch": False, "timm": False}


def test_search_by_photo_never_imports_prefect(store_with_index, tmp_path: Path) -> None:
    store, photo = store_with_index
    answer, loaded = _query(["search", str(photo), "-k", "3", "--store", store], tmp_path)
    assert len(answer["results"]) == 3 and answer["query_box"] == [0, 0, 180, 240]
    # The default encoder is built without timm (which imports torchvision, torch._dynamo).
    assert loaded == {"code": 0, "prefect": False, "torch": True, "timm": False}
